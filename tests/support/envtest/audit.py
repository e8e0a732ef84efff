"""The API server's audit log (level Metadata) read as RBAC sees it: who asked for what, and what was answered.

This is the honest record of an identity's permissions in use: every request the operator's ServiceAccount made,
with the verb and resource the authorizer checked and the response code (403 = RBAC or admission refused it).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

Permission = tuple[str, str, str]


def service_account_user(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


@dataclass(frozen=True)
class AuditEvent:
    user: str
    verb: str
    group: str
    resource: str
    subresource: str
    namespace: str
    name: str
    code: int
    uri: str
    user_agent: str
    message: str

    @property
    def permission(self) -> Permission:
        """(verb, apiGroup, resource[/subresource]) as a Role rule names it."""
        resource = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        return (self.verb, self.group, resource)


def _counts(raw: dict) -> bool:
    """One event per request: a watch is logged when it starts (ResponseStarted) and again when it ends; other
    requests, and watches refused outright, only at ResponseComplete."""
    stage, code = raw.get("stage"), int((raw.get("responseStatus") or {}).get("code", 0))
    if stage == "ResponseStarted":
        return True
    return stage == "ResponseComplete" and (raw.get("verb") != "watch" or code >= 400)


class AuditLog:
    """Read the JSON-lines log from a byte offset on, so a test can look at its own requests only."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def offset(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def events(self, since: int = 0, user: str | None = None) -> list[AuditEvent]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as handle:
            handle.seek(since)
            lines = handle.read().splitlines()
        found = []
        for line in lines:
            try:
                raw = json.loads(line)
            except json.JSONDecodeError:  # a line being written right now
                continue
            if "objectRef" not in raw or not _counts(raw):
                continue
            who = raw.get("user", {}).get("username", "")
            if user is not None and who != user:
                continue
            ref, status = raw["objectRef"], raw.get("responseStatus") or {}
            found.append(
                AuditEvent(
                    user=who,
                    verb=raw.get("verb", ""),
                    group=ref.get("apiGroup", ""),
                    resource=ref.get("resource", ""),
                    subresource=ref.get("subresource", ""),
                    namespace=ref.get("namespace", ""),
                    name=ref.get("name", ""),
                    code=int(status.get("code", 0)),
                    uri=raw.get("requestURI", ""),
                    user_agent=raw.get("userAgent", ""),
                    message=status.get("message", ""),
                )
            )
        return found

    def permissions(self, user: str, since: int = 0) -> set[Permission]:
        return {event.permission for event in self.events(since, user)}

    def counts(self, user: str, since: int = 0) -> Counter[Permission]:
        return Counter(event.permission for event in self.events(since, user))

    def refused(self, user: str, since: int = 0) -> list[AuditEvent]:
        """Requests answered 401 or 403 (RBAC or an admission plugin said no)."""
        return [event for event in self.events(since, user) if event.code in (401, 403)]
