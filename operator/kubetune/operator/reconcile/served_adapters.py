"""Per-adapter state as the server replicas see it: their GET /adapters answers folded into ModelServe status.

Each ready replica speaks only for itself, and only when the operator asks it (the pod holds no credentials to
write status). An adapter is Loaded when every replica that answered serves it from the resolved volume, Refused
when one refused it (with that replica's reason), Pending while one has not loaded it yet (the kubelet refreshes
a mounted ConfigMap up to a minute or so after the change), Unknown when no ready replica answered.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubetune.api.modelserve import ResolvedAdapter, ServedAdapter
from kubetune.api.serving import ReplicaAdapter

NO_REPLICA = "no server replica is ready yet"


@dataclass(frozen=True)
class ReplicaReport:
    """One ready server pod's answer: its adapters by name, or why it gave none (`adapters` is None)."""

    pod: str
    adapters: dict[str, ReplicaAdapter] | None
    error: str | None = None


def served_adapters(resolved: list[ResolvedAdapter], reports: list[ReplicaReport]) -> list[ServedAdapter]:
    """Each resolved adapter with its state over the replicas' reports (an empty list: no replica is ready)."""
    answered = [report for report in reports if report.adapters is not None]
    result = []
    for adapter in resolved:
        mine = [
            state
            for report in answered
            if (state := report.adapters.get(adapter.name)) is not None and state.pvc == adapter.pvc
        ]
        loaded = sum(state.state == "Loaded" for state in mine)
        refused = [state for state in mine if state.state == "Refused"]
        base = adapter.model_dump()
        if refused:
            served = ServedAdapter(**base, state="Refused", loaded_replicas=loaded, message=refused[0].message)
        elif not reports:
            served = ServedAdapter(**base, state="Pending", message=NO_REPLICA)
        elif not answered:
            why = "; ".join(f"{report.pod}: {report.error}" for report in reports)
            served = ServedAdapter(**base, state="Unknown", message=f"no ready server replica answered ({why})")
        elif loaded == len(answered):
            served = ServedAdapter(**base, state="Loaded", loaded_replicas=loaded)
        else:
            message = f"loaded on {loaded} of {len(answered)} ready server replica(s)"
            served = ServedAdapter(**base, state="Pending", loaded_replicas=loaded, message=message)
        result.append(served)
    return result


def loaded_condition(adapters: list[ServedAdapter]) -> tuple[str, str, str]:
    """(status, reason, message) of the AdaptersLoaded condition."""
    refused = [a for a in adapters if a.state == "Refused"]
    if refused:
        return "False", "AdapterRefused", "; ".join(f"adapter {a.name!r} refused: {a.message}" for a in refused)
    unknown = [a for a in adapters if a.state == "Unknown"]
    if unknown:
        return "Unknown", "ServerUnreachable", unknown[0].message or "no ready server replica answered"
    pending = [a for a in adapters if a.state == "Pending"]
    if pending:
        message = "; ".join(f"adapter {a.name!r}: {a.message}" for a in pending)
        return "False", "Loading", message
    return "True", "Loaded", f"{len(adapters)} adapter(s) loaded on every ready server replica"


def needs_recheck(adapters: list[ServedAdapter], reports: list[ReplicaReport]) -> bool:
    """Whether only time will tell (a ready replica has yet to load an adapter, or did not answer): no Kubernetes
    event follows a server reading its refreshed serve.json, so the operator asks again later."""
    return bool(reports) and any(a.state in ("Pending", "Unknown") for a in adapters)
