"""Which API calls a client made, as RBAC sees them: (verb, apiGroup, resource, subresource).

The RBAC manifests are checked against this record, so it must hold every request the operator
sends.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

OPERATOR_AGENTS = ("kopf/", "kubetune-operator/")


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
