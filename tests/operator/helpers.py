"""Sample objects and waiting helpers shared by the operator scenario tests."""

from __future__ import annotations

import copy
import time
from typing import Any

from tests.support.kube.server import FTJ, KubeTestClient

NS = "default"


def finetunejob(name: str = "sentiment", **spec: Any) -> dict[str, Any]:
    body = {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": NS},
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


def modelserve(name: str = "chat", jobs: tuple[str, ...] = ("sentiment",), **spec: Any) -> dict[str, Any]:
    body = {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "ModelServe",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "adapters": [{"name": job, "fineTuneJobRef": {"name": job}} for job in jobs],
            "resources": {"gpus": 0, "cpu": "2", "memory": "4Gi"},
        },
    }
    body["spec"].update(copy.deepcopy(spec))
    return body


def phase_is(*phases: str):
    return lambda obj: obj is not None and (obj.get("status") or {}).get("phase") in phases


def exists(obj: dict[str, Any] | None) -> bool:
    return obj is not None


def gone(obj: dict[str, Any] | None) -> bool:
    return obj is None


def wait_phase(kube: KubeTestClient, name: str, *phases: str, res: tuple[str, str] = FTJ, timeout: float = 10):
    return kube.wait_for(res, NS, name, phase_is(*phases), timeout, what=f"to reach phase {phases}")


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), None)


def event_reasons(kube: KubeTestClient, name: str) -> list[str]:
    return [e["reason"] for e in kube.list(("v1", "events"), NS) if e["involvedObject"]["name"] == name]


def wait_event(kube: KubeTestClient, name: str, reason: str, timeout: float = 10) -> list[str]:
    """Wait until an Event with `reason` is posted on `name`; returns all reasons so far."""
    deadline = time.monotonic() + timeout
    while reason not in (reasons := event_reasons(kube, name)):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {reason} event on {name} after {timeout} s; events: {reasons}")
        time.sleep(0.02)
    return reasons


def wait_call(cluster, since: int, verb: str, resource: str, timeout: float = 10) -> None:
    """Wait until the operator has sent `verb resource` after request number `since` (e.g. a resume ran)."""
    deadline = time.monotonic() + timeout
    while not any(c.verb == verb and c.resource == resource for c in cluster.recorder.of()[since:]):
        if time.monotonic() > deadline:
            raise AssertionError(f"the operator sent no {verb} {resource} within {timeout} s")
        time.sleep(0.02)
