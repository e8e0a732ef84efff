"""Is an observed child still what the operator rendered? (Server-side defaults are not drift.)"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

# Fields holding Kubernetes quantities: every value under a container's `requests`/`limits`, an emptyDir's
# `sizeLimit`. The API server stores them canonically (`0.5` as `500m`, `2048Mi` as `2Gi`): same value, no drift.
QUANTITY_FIELDS = frozenset({"requests", "limits", "sizeLimit"})
_QUANTITY = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))([eE][-+]?[0-9]+|[a-zA-Z]{0,2})$")
_SUFFIXES = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    **{suffix: Decimal(1024) ** power for power, suffix in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"), 1)},
}


def quantity_value(text: str) -> Decimal | None:
    """The number a Kubernetes quantity stands for (`500m` -> 0.5, `2Gi` -> 2147483648); None if not one."""
    match = _QUANTITY.match(text)
    if match is None:
        return None
    number, suffix = match.groups()
    try:
        value = Decimal(number)
    except InvalidOperation:
        return None
    if suffix[:1] in ("e", "E") and len(suffix) > 1:
        return value.scaleb(int(suffix[1:]))
    scale = _SUFFIXES.get(suffix)
    return None if scale is None else value * scale


def _same_quantity(observed: Any, desired: Any) -> bool:
    if not (isinstance(observed, str | int) and isinstance(desired, str | int)):
        return False
    left, right = quantity_value(str(observed)), quantity_value(str(desired))
    return left is not None and left == right


def contains(observed: Any, desired: Any, quantities: bool = False) -> bool:
    """True when every field the operator sets has that value in `observed`; extra fields are ignored.
    `quantities`: the leaves here are Kubernetes quantities, compared by value."""
    if isinstance(desired, dict):
        return isinstance(observed, dict) and all(
            key in observed and contains(observed[key], value, quantities or key in QUANTITY_FIELDS)
            for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(observed, list)
            and len(observed) == len(desired)
            and all(contains(o, d, quantities) for o, d in zip(observed, desired, strict=True))
        )
    if isinstance(desired, bool) or isinstance(observed, bool):
        return observed is desired
    if observed == desired or str(observed) == str(desired):
        return True
    return quantities and _same_quantity(observed, desired)


# Kinds whose `spec.replicas` an autoscaler may own through the `scale` subresource.
SCALABLE = frozenset({"Deployment", "StatefulSet", "ReplicaSet"})


def scaled_elsewhere(observed: dict[str, Any]) -> bool:
    """True when `spec.replicas` was last written through the `scale` subresource: the HorizontalPodAutoscaler
    controller (and KEDA, through an HPA) or `kubectl scale` own the size from then on. The API server records
    who owns each field (`metadata.managedFields`, with `subresource: scale`), so no permission to read
    HorizontalPodAutoscalers is needed. A plain edit of the Deployment does not count: that is drift."""
    for entry in (observed.get("metadata") or {}).get("managedFields") or []:
        fields = (entry.get("fieldsV1") or {}).get("f:spec") or {}
        if entry.get("subresource") == "scale" and "f:replicas" in fields:
            return True
    return False


def _leave_replicas(desired: dict[str, Any], observed: dict[str, Any] | None) -> dict[str, Any]:
    """`desired` without `spec.replicas` when an autoscaler owns the observed object's size."""
    if observed is None or desired.get("kind") not in SCALABLE or not scaled_elsewhere(observed):
        return desired
    spec = {key: value for key, value in (desired.get("spec") or {}).items() if key != "replicas"}
    return {**desired, "spec": spec}


def repair_patch(desired: dict[str, Any], observed: dict[str, Any] | None = None) -> dict[str, Any]:
    """A merge patch that puts back what the operator owns: labels, owner references and the body (without
    `spec.replicas` when an autoscaler took the observed object's size over: see `scaled_elsewhere`)."""
    desired = _leave_replicas(desired, observed)
    meta = desired.get("metadata", {})
    patch = {key: value for key, value in desired.items() if key not in {"apiVersion", "kind", "metadata"}}
    patch["metadata"] = {key: meta[key] for key in ("labels", "ownerReferences") if key in meta}
    return patch


def drifted(observed: dict[str, Any], desired: dict[str, Any]) -> bool:
    return not contains(observed, repair_patch(desired, observed))


# Ownership of an existing object that has the name of a child the operator wants (see `ownership`).
OURS = "Ours"
TERMINATING = "Terminating"
PREDECESSOR = "PreviousOwner"
FOREIGN = "Foreign"


def controller_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The owner reference marked `controller: true` (at most one per object), or None."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return next((ref for ref in refs if ref.get("controller")), None)


def describe(obj: dict[str, Any]) -> str:
    """`Kind/name`, as kubectl names an object."""
    return f"{obj.get('kind', 'object')}/{(obj.get('metadata') or {}).get('name')}"


def ownership(observed: dict[str, Any], desired: dict[str, Any]) -> tuple[str, str]:
    """(verdict, why) for an object found under a desired child's name. Only OURS may be used or patched;
    TERMINATING and PREDECESSOR (an earlier object of the same kind and name, e.g. a FineTuneJob deleted and
    re-created) go away on their own and are waited for; FOREIGN belongs to someone else and is never touched.
    A desired child without owner reference (a kept output claim) is ours when it carries all our labels."""
    meta = observed.get("metadata") or {}
    name = describe(desired)
    if meta.get("deletionTimestamp"):
        return TERMINATING, f"{name} is being deleted; waiting for it to go before creating ours"
    owner = controller_of(observed)
    wanted = controller_of(desired)
    if wanted is not None and owner is not None and owner.get("uid") == wanted.get("uid"):
        return OURS, f"{name} is ours"
    if (
        wanted is not None
        and owner is not None
        and (owner.get("kind"), owner.get("name"))
        == (
            wanted.get("kind"),
            wanted.get("name"),
        )
    ):
        return PREDECESSOR, (
            f"{name} belongs to an earlier {owner.get('kind')} {owner.get('name')!r} (uid {owner.get('uid')}); "
            "waiting for the garbage collector to delete it"
        )
    labels = meta.get("labels") or {}
    wanted_labels = (desired.get("metadata") or {}).get("labels") or {}
    if wanted is None and owner is None and all(labels.get(key) == value for key, value in wanted_labels.items()):
        return OURS, f"{name} is ours (kept, carries our labels)"
    held_by = f"it is controlled by {owner.get('kind')}/{owner.get('name')}" if owner else "it has no controller"
    return FOREIGN, f"{name} already exists and is not ours ({held_by}); it is left untouched"
