"""Patch semantics of the Kubernetes API (JSON merge patch, JSON patch), applied to plain dicts."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

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


def json_patch(target: dict[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902, with a failed `test` reported as PatchTestFailed."""
    try:
        return jsonpatch.apply_patch(target, operations, in_place=False)
    except jsonpatch.JsonPatchTestFailed as exc:
        raise PatchTestFailed(str(exc)) from exc


def apply_patch(target: dict[str, Any], body: Any, content_type: str) -> dict[str, Any]:
    """Apply a PATCH body by its content type (a list body is a JSON patch whatever the header says)."""
    if content_type == JSON_PATCH_TYPE or isinstance(body, list):
        return json_patch(target, body)
    if content_type in MERGE_PATCH_TYPES or not content_type:
        return merge_patch(target, body)
    raise ValueError(f"unsupported patch content type {content_type!r}")
