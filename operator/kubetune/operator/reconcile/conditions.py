"""Setting conditions the Kubernetes way: lastTransitionTime changes only when status changes."""

from __future__ import annotations

from typing import Literal

from kubetune.api.conditions import Condition

Status = Literal["True", "False", "Unknown"]


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: Status,
    reason: str,
    message: str,
    generation: int | None,
    now: str,
) -> list[Condition]:
    """A new list with `type_` set (appended if new), keeping the transition time when status is unchanged."""
    result = []
    found = False
    for condition in conditions:
        if condition.type != type_:
            result.append(condition)
            continue
        found = True
        changed = condition.status != status
        result.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message[:32768],
                last_transition_time=now
                if changed or condition.last_transition_time is None
                else condition.last_transition_time,
                observed_generation=generation,
            )
        )
    if not found:
        result.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message[:32768],
                last_transition_time=now,
                observed_generation=generation,
            )
        )
    return result


def get_condition(conditions: list[Condition], type_: str) -> Condition | None:
    return next((condition for condition in conditions if condition.type == type_), None)


def raw_condition(obj: dict | None, type_: str) -> dict | None:
    """A condition of a built-in object's status (Job, Deployment) as a dict, or None."""
    for condition in ((obj or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == type_:
            return condition
    return None


def is_true(obj: dict | None, type_: str) -> bool:
    condition = raw_condition(obj, type_)
    return condition is not None and condition.get("status") == "True"
