"""Which API calls a client made, as RBAC sees them: (verb, apiGroup, resource, subresource).

The RBAC manifests are checked against this record, so it must hold every request the operator
sends. Set KUBETUNE_API_REQUESTS_FILE to have the test session write the collected set as JSON.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

OPERATOR_AGENTS = ("kopf/", "kubetune-operator/")
REQUESTS_FILE_ENV = "KUBETUNE_API_REQUESTS_FILE"


@dataclass(frozen=True, order=True)
class ApiCall:
    """One request in RBAC terms, plus who sent it."""

    verb: str
    group: str
    resource: str
    subresource: str
    namespace: str
    agent: str

    @property
    def permission(self) -> tuple[str, str, str]:
        """(verb, apiGroup, resource[/subresource]) as a Role rule names it."""
        resource = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        return (self.verb, self.group, resource)


def rbac_verb(method: str, named: bool, watch: bool) -> str:
    """The RBAC verb of an HTTP request on a resource path."""
    if method == "GET":
        return "watch" if watch else ("get" if named else "list")
    return {
        "POST": "create",
        "PATCH": "patch",
        "PUT": "update",
        "DELETE": "delete" if named else "deletecollection",
    }.get(method, method.lower())


class ApiRequestRecorder:
    """Thread-safe log of API calls; `permissions()` is what the RBAC must allow."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[ApiCall] = []

    def record(self, call: ApiCall) -> None:
        with self._lock:
            self.calls.append(call)

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()

    def of(self, agents: tuple[str, ...] = OPERATOR_AGENTS) -> list[ApiCall]:
        with self._lock:
            return [call for call in self.calls if call.agent.startswith(agents)]

    def permissions(self, agents: tuple[str, ...] = OPERATOR_AGENTS) -> set[tuple[str, str, str]]:
        return {call.permission for call in self.of(agents)}

    def counts(self, agents: tuple[str, ...] = OPERATOR_AGENTS) -> Counter[tuple[str, str, str]]:
        return Counter(call.permission for call in self.of(agents))


def dump_permissions(permissions: set[tuple[str, str, str]], path: str | Path) -> None:
    """Write (merging with what is already there) a sorted JSON list of {verb, apiGroup, resource}."""
    target = Path(path)
    known: set[tuple[str, str, str]] = set()
    if target.exists():
        known = {(row["verb"], row["apiGroup"], row["resource"]) for row in json.loads(target.read_text())}
    rows = [
        {"verb": verb, "apiGroup": group, "resource": resource} for verb, group, resource in sorted(known | permissions)
    ]
    target.write_text(json.dumps(rows, indent=2) + "\n")
