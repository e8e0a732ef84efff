"""Patch semantics of the Kubernetes API (JSON merge patch, JSON patch), applied to plain dicts."""

from __future__ import annotations

import copy
from typing import Any

MERGE_PATCH_TYPES = {
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
}
JSON_PATCH_TYPE = "application/json-patch+json"


class PatchTestFailed(ValueError):
    """A JSON patch `test` operation did not match: the API server answers 422 and kopf re-reads."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: dicts merge recursively, `null` removes a key, everything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError(f"JSON pointer {path!r} must start with '/'")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _parent(document: Any, parts: list[str]) -> tuple[Any, str]:
    node = document
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node, parts[-1]


def _get(document: Any, path: str) -> Any:
    node = document
    for part in _pointer(path):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _add(document: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    parent, key = _parent(document, parts)
    if isinstance(parent, list):
        parent.insert(len(parent) if key == "-" else int(key), value)
    else:
        parent[key] = value
    return document


def _remove(document: Any, path: str) -> Any:
    parent, key = _parent(document, _pointer(path))
    if isinstance(parent, list):
        del parent[int(key)]
    else:
        del parent[key]
    return document


def json_patch(target: dict[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 (add, remove, replace, move, copy, test); a failed `test` raises PatchTestFailed."""
    document: Any = copy.deepcopy(target)
    for operation in operations:
        op, path = operation["op"], operation["path"]
        if op == "test":
            try:
                actual = _get(document, path)
            except (KeyError, IndexError, ValueError) as exc:
                raise PatchTestFailed(f"test failed: {path} does not exist") from exc
            if actual != operation["value"]:
                raise PatchTestFailed(f"test failed: {path} is {actual!r}, not {operation['value']!r}")
        elif op == "add":
            document = _add(document, path, copy.deepcopy(operation["value"]))
        elif op == "remove":
            document = _remove(document, path)
        elif op == "replace":
            document = _add(_remove(document, path), path, copy.deepcopy(operation["value"]))
        elif op in ("move", "copy"):
            value = copy.deepcopy(_get(document, operation["from"]))
            if op == "move":
                document = _remove(document, operation["from"])
            document = _add(document, path, value)
        else:
            raise ValueError(f"unknown JSON patch operation {op!r}")
    return document


def apply_patch(target: dict[str, Any], body: Any, content_type: str) -> dict[str, Any]:
    """Apply a PATCH body by its content type (a list body is a JSON patch whatever the header says)."""
    if content_type == JSON_PATCH_TYPE or isinstance(body, list):
        return json_patch(target, body)
    if content_type in MERGE_PATCH_TYPES or not content_type:
        return merge_patch(target, body)
    raise ValueError(f"unsupported patch content type {content_type!r}")
