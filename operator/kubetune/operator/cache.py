"""Reads of children (and of the FineTuneJobs a ModelServe serves) from what the operator's watches already hold
(kopf indices), instead of a GET each time.

kopf keeps an index per watched child kind (handlers.py) and starts no handler before every index has been filled
from its initial LIST, so a cached child is at most one watch event old. Only reads come from here: creates and
patches still go to the API server. A miss, or two objects under one name (a child replaced, the old one's DELETED
event not yet seen), falls back to a GET, so a child the watch has not delivered yet (just created, or the
operator just started) is never taken for missing. A stale hit (a child deleted a moment ago) is corrected by the
DELETED event, which reconciles the owner again (handlers.child_deleted).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping
from typing import Any

from .kube import Kube, Resource


class ChildReader:
    """GET-compatible reads: `get(res, namespace, name)` from the kind's index when attached, else the API."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._indices: dict[str, Mapping[Any, Any]] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def attach(self, kind: str, index: Mapping[Any, Any]) -> None:
        """Use kopf's live index of `kind` (keys (namespace, name), one stored body per object)."""
        self._indices[kind] = index

    def cached(self, kind: str) -> bool:
        return kind in self._indices

    def get(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        index = self._indices.get(res.kind)
        if index is not None:
            found = list(index.get((namespace, name), ()))
            if len(found) == 1:
                with self._lock:
                    self.hits += 1
                return copy.deepcopy(found[0])  # callers add fields (kind) and must never touch kopf's copy
        with self._lock:
            self.misses += 1
        return self.kube.get(res, namespace, name)
