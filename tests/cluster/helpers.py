"""Sample objects and waiting helpers for the real-control-plane scenarios: the namespace is always a parameter
(every test gets its own namespace from the `ns` fixture), and the waits are generous enough for a loaded box."""

from __future__ import annotations

import copy
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubetune_trainer.kube_status import KubeStatusClient

from tests.support.envtest.audit import AuditEvent
from tests.support.envtest.fixtures import OPERATOR_USER, RealCluster
from tests.support.kube.server import (
    CONFIGMAPS,
    FTJ,
    JOBS,
    PVCS,
    ROLEBINDINGS,
    ROLES,
    SERVICEACCOUNTS,
    KubeTestClient,
    resource_path,
)

EVENTS = ("v1", "events")
# Every child the operator creates for the FineTuneJob `finetunejob(ns)` builds ("sentiment"), Job last.
SENTIMENT_CHILDREN = (
    (CONFIGMAPS, "sentiment-spec"),
    (PVCS, "sentiment-output"),
    (CONFIGMAPS, "sentiment-report"),
    (SERVICEACCOUNTS, "sentiment-trainer"),
    (ROLES, "sentiment-trainer"),
    (ROLEBINDINGS, "sentiment-trainer"),
    (JOBS, "sentiment-train"),
)


def finetunejob(ns: str, name: str = "sentiment", **spec: Any) -> dict[str, Any]:
    """A valid FineTuneJob in `ns`; keyword arguments replace whole top-level spec fields."""
    body = {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "baseModel": {"name": "Qwen/Qwen2.5-0.5B-Instruct", "tokenSecretRef": {"name": "hf-token"}},
            "dataset": {"configMap": {"name": "facts", "key": "train.jsonl"}, "format": "qa"},
            "method": "lora",
            "training": {"epochs": 1, "maxSteps": 4},
            "resources": {"gpus": 1, "cpu": "4", "memory": "16Gi"},
        },
    }
    body["spec"].update(copy.deepcopy(spec))
    return body


def modelserve(ns: str, name: str = "chat", jobs: tuple[str, ...] = ("sentiment",), **spec: Any) -> dict[str, Any]:
    """A valid ModelServe in `ns` serving the adapters of the FineTuneJobs named in `jobs`."""
    body = {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "ModelServe",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "adapters": [{"name": job, "fineTuneJobRef": {"name": job}} for job in jobs],
            "resources": {"gpus": 0, "cpu": "2", "memory": "4Gi"},
        },
    }
    body["spec"].update(copy.deepcopy(spec))
    return body


def phase_is(*phases: str) -> Callable[[dict[str, Any] | None], bool]:
    return lambda obj: obj is not None and (obj.get("status") or {}).get("phase") in phases


def exists(obj: dict[str, Any] | None) -> bool:
    return obj is not None


def gone(obj: dict[str, Any] | None) -> bool:
    return obj is None


def wait_phase(
    kube: KubeTestClient, ns: str, name: str, *phases: str, res: tuple[str, str] = FTJ, timeout: float = 30
) -> dict[str, Any]:
    """Wait until the object's status.phase is one of `phases`; returns the object."""
    obj = kube.wait_for(res, ns, name, phase_is(*phases), timeout, what=f"to reach phase {phases}")
    assert obj is not None
    return obj


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    """The status condition of `type_`, or None."""
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), None)


def event_reasons(kube: KubeTestClient, ns: str, name: str) -> list[str]:
    """The reasons of every Event in `ns` about an object called `name`, oldest first. The server lists by name
    (the operator's are `NAME.<random>`) and timestamps have one-second resolution, so order by resourceVersion:
    on one etcd it is the write order."""
    events = [e for e in kube.list(EVENTS, ns) if e["involvedObject"]["name"] == name]
    return [e["reason"] for e in sorted(events, key=lambda e: int(e["metadata"]["resourceVersion"]))]


def wait_event(kube: KubeTestClient, ns: str, name: str, reason: str, timeout: float = 30) -> list[str]:
    """Wait until an Event with `reason` is posted on `name`; returns all reasons so far."""
    deadline = time.monotonic() + timeout
    while reason not in (reasons := event_reasons(kube, ns, name)):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {reason} event on {ns}/{name} after {timeout} s; events: {reasons}")
        time.sleep(0.05)
    return reasons


def operator_requests(
    cluster: RealCluster, since: int, verb: str, resource: str, subresource: str = ""
) -> list[AuditEvent]:
    """The operator's requests `verb resource[/subresource]` in the audit log after byte `since` (the real
    server's record, in place of the mock's request recorder)."""
    return [
        event
        for event in cluster.audit.events(since, OPERATOR_USER)
        if event.verb == verb and event.resource == resource and event.subresource == subresource
    ]


def wait_request(
    cluster: RealCluster, since: int, verb: str, resource: str, subresource: str = "", timeout: float = 30
) -> None:
    """Wait until the operator has sent `verb resource` after audit offset `since` (e.g. a resume handler ran)."""
    deadline = time.monotonic() + timeout
    while not operator_requests(cluster, since, verb, resource, subresource):
        if time.monotonic() > deadline:
            raise AssertionError(f"the operator sent no {verb} {resource} within {timeout} s")
        time.sleep(0.05)


def wait_until(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    """Poll `check()` until it returns something truthy (the real controllers act asynchronously); returns it."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting {what}")
        time.sleep(0.05)
    return result


def delete(kube: KubeTestClient, res: tuple[str, str], ns: str, name: str, propagation: str = "Background") -> None:
    """Delete as kubectl does: batch/v1 Jobs otherwise default to orphaning their pods on a real server."""
    response = kube.http.delete(resource_path(*res, ns, name), params={"propagationPolicy": propagation})
    kube._check(response)


def trainer_report_client(control_plane: RealCluster, ns: str, job: str, folder: Path) -> KubeStatusClient:
    """The client a running trainer pod of FineTuneJob `job` reports through: its ServiceAccount's token (written
    to `folder`) against its own report ConfigMap, as the pod would use them."""
    from kubetune_trainer.kube_status import KubeStatusClient

    plane = control_plane.plane
    token = folder / "token"
    token.write_text(plane.service_account_token(ns, f"{job}-trainer"))
    context = ssl.create_default_context(cafile=str(plane.pki.ca))
    return KubeStatusClient(plane.url, ns, f"{job}-report", token, context)
