"""What a reconcile decided: children to create, patches, the next status and the events to post."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the custom resource."""

    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Plan:
    create: list[dict[str, Any]] = field(default_factory=list)
    """Children to create when missing (in order)."""

    shared: list[dict[str, Any]] = field(default_factory=list)
    """Objects several custom resources use (the namespace's model cache claim): created first when missing, never
    owned, checked for ownership or patched."""

    patches: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    """(child as observed, merge patch) pairs."""

    status: dict[str, Any] = field(default_factory=dict)
    """The operator-owned status fields, as a merge patch (None clears a field)."""

    events: list[Event] = field(default_factory=list)
    phase: str = "Pending"

    recheck: bool = False
    """Reconcile again later: only time will change what was observed (a server still loading its adapters)."""
