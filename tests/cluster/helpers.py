"""Sample objects and waiting helpers for the real-control-plane scenarios: the namespace is always a parameter
(every test gets its own namespace from the `ns` fixture), and the waits are generous enough for a loaded box."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

from tests.support.kube.server import FTJ, KubeTestClient

EVENTS = ("v1", "events")


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
    """The reasons of every Event in `ns` about an object called `name`, oldest first as the server lists them."""
    return [e["reason"] for e in kube.list(EVENTS, ns) if e["involvedObject"]["name"] == name]


def wait_event(kube: KubeTestClient, ns: str, name: str, reason: str, timeout: float = 30) -> list[str]:
    """Wait until an Event with `reason` is posted on `name`; returns all reasons so far."""
    deadline = time.monotonic() + timeout
    while reason not in (reasons := event_reasons(kube, ns, name)):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {reason} event on {ns}/{name} after {timeout} s; events: {reasons}")
        time.sleep(0.05)
    return reasons
