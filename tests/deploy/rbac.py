"""RBAC rules as sets of (verb, apiGroup, resource) permissions, the shape the API-call recorder uses."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Permission = tuple[str, str, str]


def rule_permissions(rules: Iterable[dict[str, Any]]) -> set[Permission]:
    """Expand rules into single permissions; resourceNames-restricted rules are kept apart by the caller."""
    return {
        (verb, group, resource)
        for rule in rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }


def roles(manifests: list[dict[str, Any]], kind: str) -> dict[tuple[str, str], set[Permission]]:
    """(namespace, name) -> permissions of every Role or ClusterRole in a rendering."""
    return {
        (m["metadata"].get("namespace", ""), m["metadata"]["name"]): rule_permissions(m.get("rules") or [])
        for m in manifests
        if m["kind"] == kind
    }


def granted_in_namespace(manifests: list[dict[str, Any]], namespace: str) -> set[Permission]:
    """Everything the install's roles grant the operator inside one namespace (cluster roles included)."""
    cluster = set().union(*roles(manifests, "ClusterRole").values())
    local = {perm for (ns, _), perms in roles(manifests, "Role").items() if ns == namespace for perm in perms}
    return cluster | local
