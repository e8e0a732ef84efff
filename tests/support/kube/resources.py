"""The resources the mock serves: Kubernetes' built-ins (from kmock's bundled discovery) and kubetune's CRDs."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import kmock
import yaml

from .state import Kind

REPO_ROOT = Path(__file__).resolve().parents[3]
CRD_DIR = REPO_ROOT / "crds"

# Fields the real API server refuses to change after creation, for the kinds the operator patches.
IMMUTABLE_SPEC_FIELDS = {("batch", "jobs"): ("template", "selector", "podFailurePolicy", "completionMode")}


@functools.cache
def load_crds(crd_dir: Path = CRD_DIR) -> list[dict[str, Any]]:
    """The generated CustomResourceDefinitions of this repository (parsed once; treat as read-only)."""
    return [yaml.safe_load(path.read_text()) for path in sorted(crd_dir.glob("*.yaml"))]


def builtin_kinds() -> tuple[kmock.ResourcesArray, list[Kind]]:
    """kmock's bundled K3s resource list, as discovery info and as store kinds (a fresh list each call)."""
    array, kinds = _builtin_kinds()
    return array, list(kinds)


@functools.cache
def _builtin_kinds() -> tuple[kmock.ResourcesArray, tuple[Kind, ...]]:
    array = kmock.ResourcesArray()
    array.load_bundled()
    kinds = []
    for resource in array:
        info = array[resource]
        if info.kind is None or resource.group == "metrics.k8s.io":
            continue
        key = (resource.group, resource.plural)
        kinds.append(
            Kind(
                group=resource.group,
                version=resource.version,
                plural=resource.plural,
                kind=info.kind,
                namespaced=bool(info.namespaced),
                has_status="status" in info.subresources,
                immutable_spec_fields=IMMUTABLE_SPEC_FIELDS.get(key, ()),
            )
        )
    return array, tuple(kinds)


def crd_kind(crd: dict[str, Any]) -> tuple[str, kmock.ResourceInfo, Kind]:
    """Discovery key, discovery info and store kind of one CRD (its storage version)."""
    spec = crd["spec"]
    names = spec["names"]
    version = next(v for v in spec["versions"] if v.get("storage"))
    subresources = set((version.get("subresources") or {}).keys())
    info = kmock.ResourceInfo(
        kind=names["kind"],
        singular=names.get("singular"),
        namespaced=spec["scope"] == "Namespaced",
        shortnames=set(names.get("shortNames", [])),
        categories=set(names.get("categories", [])),
        subresources=subresources,
        verbs={"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"},
    )
    kind = Kind(
        group=spec["group"],
        version=version["name"],
        plural=names["plural"],
        kind=names["kind"],
        namespaced=spec["scope"] == "Namespaced",
        has_status="status" in subresources,
    )
    return f"{spec['group']}/{version['name']}/{names['plural']}", info, kind
