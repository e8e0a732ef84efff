"""Is an observed child still what the operator rendered? (Server-side defaults are not drift.)"""

from __future__ import annotations

from typing import Any


def contains(observed: Any, desired: Any) -> bool:
    """True when every field the operator sets has that value in `observed`; extra fields are ignored."""
    if isinstance(desired, dict):
        return isinstance(observed, dict) and all(
            key in observed and contains(observed[key], value) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(observed, list)
            and len(observed) == len(desired)
            and all(contains(o, d) for o, d in zip(observed, desired, strict=True))
        )
    if isinstance(desired, bool) or isinstance(observed, bool):
        return observed is desired
    return observed == desired or str(observed) == str(desired)


def repair_patch(desired: dict[str, Any]) -> dict[str, Any]:
    """A merge patch that puts back what the operator owns: labels, owner references and the body."""
    meta = desired.get("metadata", {})
    patch = {key: value for key, value in desired.items() if key not in {"apiVersion", "kind", "metadata"}}
    patch["metadata"] = {key: meta[key] for key in ("labels", "ownerReferences") if key in meta}
    return patch


def drifted(observed: dict[str, Any], desired: dict[str, Any]) -> bool:
    return not contains(observed, repair_patch(desired))
