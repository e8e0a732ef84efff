"""The in-memory object store behind the mock API server: what a real API server and its GC guarantee.

Kept free of HTTP so its rules (uid, resourceVersion, generation, status subresource, finalizers,
owner-reference garbage collection, watch history) can be unit-tested directly.
"""

from __future__ import annotations

import bisect
import copy
import datetime
import secrets
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .patching import PatchTestFailed, apply_patch
from .selectors import field_matcher, label_matcher


@dataclass(frozen=True)
class Kind:
    """One served resource: enough to answer requests for it the way the real API server does."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    has_status: bool = False
    immutable_spec_fields: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)


class ApiError(Exception):
    """An API failure with the HTTP code and the `reason` a real server sends."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def status(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Failure",
            "code": self.code,
            "reason": self.reason,
            "message": self.message,
        }


def now_rfc3339() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _essence(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What bumps metadata.generation: everything except metadata and status."""
    return {key: value for key, value in obj.items() if key not in {"metadata", "status"}}


ObjectKey = tuple[str, str, str | None, str]  # group, plural, namespace, name
Validator = Callable[[Kind, dict[str, Any], str | None], None]


class ClusterState:
    """Objects by kind/namespace/name plus a per-kind event history for resumable watches."""

    def __init__(self, kinds: list[Kind], history_limit: int = 100_000) -> None:
        self.kinds = {kind.key: kind for kind in kinds}
        self.history_limit = history_limit
        self._objects: dict[ObjectKey, dict[str, Any]] = {}
        self._history: dict[tuple[str, str], list[tuple[int, str, dict[str, Any]]]] = {}
        self._history_rvs: dict[tuple[str, str], list[int]] = {}
        self._uids: dict[str, ObjectKey] = {}
        self._dependents: dict[str, set[ObjectKey]] = {}  # owner uid -> keys of objects it owns
        self._revision = 0
        self._lock = threading.RLock()
        self.listeners: list[Callable[[], None]] = []
        self.observers: list[Callable[[Kind, str, dict[str, Any]], None]] = []
        """Called with (kind, event type, object) on every change, under the store's lock: keep them quick."""

    # ---- lookup -------------------------------------------------------------------------------
    def kind(self, group: str, plural: str) -> Kind:
        try:
            return self.kinds[(group, plural)]
        except KeyError:
            raise ApiError(
                404, "NotFound", f"the server could not find the requested resource {plural}.{group}"
            ) from None

    @property
    def revision(self) -> int:
        return self._revision

    def get(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any]:
        with self._lock:
            obj = self._objects.get(self._key(kind, namespace, name))
            if obj is None:
                raise ApiError(404, "NotFound", f'{kind.plural}.{kind.group or "core"} "{name}" not found')
            return copy.deepcopy(obj)

    def list(
        self,
        kind: Kind,
        namespace: str | None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        matches = self._matcher(kind, namespace, label_selector, field_selector)
        with self._lock:
            items = [copy.deepcopy(obj) for key, obj in self._objects.items() if key[:2] == kind.key and matches(obj)]
            return items, self._revision

    # ---- writes -------------------------------------------------------------------------------
    def create(
        self, kind: Kind, namespace: str | None, body: dict[str, Any], validate: Validator | None = None
    ) -> dict[str, Any]:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if kind.namespaced:
            body_namespace = meta.get("namespace")
            if namespace and body_namespace and body_namespace != namespace:
                raise ApiError(400, "BadRequest", "the namespace of the object does not match the request URL")
            meta["namespace"] = namespace or body_namespace or "default"
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ApiError(422, "Invalid", "metadata.name: Required value: name or generateName is required")
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        if kind.has_status:
            obj.pop("status", None)  # status is written only through the status subresource
        with self._lock:
            key = self._key(kind, meta.get("namespace"), meta["name"])
            if key in self._objects:
                raise ApiError(
                    409, "AlreadyExists", f'{kind.plural}.{kind.group or "core"} "{meta["name"]}" already exists'
                )
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            if kind.has_status:
                meta["generation"] = 1
            for transient in ("resourceVersion", "deletionTimestamp", "selfLink"):
                meta.pop(transient, None)
            if validate is not None:
                validate(kind, obj, None)
            self._store(kind, key, obj, "ADDED")
            return copy.deepcopy(obj)

    def patch(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        body: Any,
        content_type: str,
        subresource: str | None = None,
        validate: Validator | None = None,
    ) -> dict[str, Any]:
        with self._lock:
            old = self.get(kind, namespace, name)
            try:
                new = apply_patch(old, body, content_type)
            except PatchTestFailed as exc:
                raise ApiError(
                    422, "Invalid", f"the server rejected our request due to an error in our request: {exc}"
                ) from exc
            except Exception as exc:  # a malformed patch body
                raise ApiError(400, "BadRequest", f"invalid patch: {exc}") from exc
            wanted_rv = body.get("metadata", {}).get("resourceVersion") if isinstance(body, dict) else None
            if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {kind.plural} "{name}": the object has been modified',
                )
            return self._write(kind, old, new, subresource, validate)

    def replace(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        body: dict[str, Any],
        subresource: str | None = None,
        validate: Validator | None = None,
    ) -> dict[str, Any]:
        with self._lock:
            old = self.get(kind, namespace, name)
            wanted_rv = body.get("metadata", {}).get("resourceVersion")
            if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {kind.plural} "{name}": the object has been modified',
                )
            return self._write(kind, old, copy.deepcopy(body), subresource, validate)

    def delete(self, kind: Kind, namespace: str | None, name: str, propagation: str = "Background") -> dict[str, Any]:
        with self._lock:
            obj = self.get(kind, namespace, name)
            meta = obj["metadata"]
            if meta.get("deletionTimestamp"):
                return obj
            if meta.get("finalizers"):
                meta["deletionTimestamp"] = now_rfc3339()
                meta["deletionGracePeriodSeconds"] = 0
                self._store(kind, self._key(kind, namespace, name), obj, "MODIFIED")
                return copy.deepcopy(obj)
            self._remove(kind, obj, cascade=propagation != "Orphan")
            return obj

    # ---- watch history ------------------------------------------------------------------------
    def events_since(
        self,
        kind: Kind,
        revision: int,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[tuple[int, str, dict[str, Any]]], int]:
        """Events after `revision` and the revision they reach; ApiError 410 past the kept history."""
        matches = self._matcher(kind, namespace, label_selector, field_selector)
        with self._lock:
            history = self._history.get(kind.key, [])
            if history and revision < history[0][0] - 1 and len(history) >= self.history_limit:
                raise ApiError(410, "Expired", f"too old resource version: {revision} ({history[0][0]})")
            start = bisect.bisect_right(self._history_rvs.get(kind.key, []), revision)
            # History entries are snapshots nobody mutates: handed out without copying (read-only).
            events = [(rv, kind_, obj) for rv, kind_, obj in history[start:] if matches(obj)]
            return events, self._revision

    # ---- internals ----------------------------------------------------------------------------
    def _key(self, kind: Kind, namespace: str | None, name: str) -> ObjectKey:
        return (kind.group, kind.plural, namespace if kind.namespaced else None, name)

    def _matcher(
        self, kind: Kind, namespace: str | None, label_selector: str | None, field_selector: str | None
    ) -> Callable[[Mapping[str, Any]], bool]:
        labels_ok, fields_ok = label_matcher(label_selector), field_matcher(field_selector)

        def matches(obj: Mapping[str, Any]) -> bool:
            meta = obj.get("metadata", {})
            if kind.namespaced and namespace and meta.get("namespace") != namespace:
                return False
            return labels_ok(meta.get("labels") or {}) and fields_ok(obj)

        return matches

    def _write(
        self,
        kind: Kind,
        old: dict[str, Any],
        new: dict[str, Any],
        subresource: str | None,
        validate: Validator | None,
    ) -> dict[str, Any]:
        if subresource == "status":
            new = {**copy.deepcopy(old), "status": new.get("status")}
            if new["status"] is None:
                new.pop("status")
        elif kind.has_status:
            new = (
                {**new, "status": old["status"]} if "status" in old else {k: v for k, v in new.items() if k != "status"}
            )
        meta = new.setdefault("metadata", {})
        for field in ("uid", "creationTimestamp", "namespace", "name", "generation", "deletionTimestamp"):
            if field in old["metadata"]:
                meta[field] = old["metadata"][field]
            else:
                meta.pop(field, None)
        new["apiVersion"], new["kind"] = kind.api_version, kind.kind
        for path in kind.immutable_spec_fields:
            if old.get("spec", {}).get(path) != new.get("spec", {}).get(path):
                raise ApiError(
                    422,
                    "Invalid",
                    f'{kind.kind}.{kind.group} "{meta["name"]}" is invalid: spec.{path}: field is immutable',
                )
        if kind.has_status and _essence(new) != _essence(old):
            meta["generation"] = old["metadata"].get("generation", 1) + 1
        if new == old:
            return new  # a no-op write changes nothing, not even the resourceVersion
        if validate is not None:
            validate(kind, new, subresource)
        key = self._key(kind, meta.get("namespace"), meta["name"])
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._remove(kind, new, cascade=True)
            return new
        self._store(kind, key, new, "MODIFIED")
        return copy.deepcopy(new)

    def _store(self, kind: Kind, key: ObjectKey, obj: dict[str, Any], event: str) -> None:
        self._revision += 1
        obj["metadata"]["resourceVersion"] = str(self._revision)
        previous = self._objects.get(key)
        if previous is not None:
            self._unindex(key, previous)
        self._objects[key] = obj
        self._uids[obj["metadata"]["uid"]] = key
        for ref in obj["metadata"].get("ownerReferences") or []:
            self._dependents.setdefault(ref.get("uid", ""), set()).add(key)
        self._record(kind, event, obj)

    def _record(self, kind: Kind, event: str, obj: dict[str, Any]) -> None:
        history = self._history.setdefault(kind.key, [])
        revisions = self._history_rvs.setdefault(kind.key, [])
        history.append((self._revision, event, copy.deepcopy(obj)))
        revisions.append(self._revision)
        if len(history) > self.history_limit:
            del history[: len(history) - self.history_limit]
            del revisions[: len(revisions) - self.history_limit]
        for observer in self.observers:
            observer(kind, event, obj)
        for listener in list(self.listeners):
            listener()

    def _remove(self, kind: Kind, obj: dict[str, Any], cascade: bool) -> None:
        meta = obj["metadata"]
        key = self._key(kind, meta.get("namespace"), meta["name"])
        stored = self._objects.pop(key, None)
        if stored is not None:
            self._unindex(key, stored)
        self._revision += 1
        meta["resourceVersion"] = str(self._revision)
        self._record(kind, "DELETED", obj)
        if cascade:
            self._collect_garbage(meta["uid"])

    def _unindex(self, key: ObjectKey, obj: dict[str, Any]) -> None:
        self._uids.pop(obj["metadata"]["uid"], None)
        for ref in obj["metadata"].get("ownerReferences") or []:
            dependents = self._dependents.get(ref.get("uid", ""))
            if dependents is not None:
                dependents.discard(key)

    def _collect_garbage(self, owner_uid: str) -> None:
        """The garbage collector: delete dependents whose owners are all gone (background propagation)."""
        for key in sorted(self._dependents.pop(owner_uid, set())):
            obj = self._objects.get(key)
            if obj is None:
                continue
            refs = obj["metadata"].get("ownerReferences") or []
            if not any(ref.get("uid") in self._uids for ref in refs):
                self.delete(self.kinds[key[:2]], key[2], key[3])
