"""Ask each ready server pod of a ModelServe which adapters it serves (GET /adapters), with a short timeout.

Only pods of the operator's own Deployment are asked (the ReplicaSet controller reference the Deployment's naming
gives, `<deployment>-<pod-template-hash>`), by pod IP on the container's `http` port; the answers are parsed with
the shared contract (kubetune.api.serving.ReplicaAdapters). A pod that does not answer in time is reported as such,
never waited on: the reconcile holds the ModelServe's lock meanwhile.
"""

from __future__ import annotations

import http.client
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import ValidationError

from kubetune.api import runtime
from kubetune.api.serving import ADAPTERS_PATH, ReplicaAdapters

from . import naming
from .manifests.server import PORT_NAME
from .reconcile.served_adapters import ReplicaReport

TIMEOUT_SECONDS = 2.0
MAX_PARALLEL = 8
POD_TEMPLATE_HASH = "pod-template-hash"


def _ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def server_pods(deployment: dict[str, Any], pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ready, running pods of `deployment` (its ReplicaSets' own pods, not any pod with the same labels)."""
    name = deployment["metadata"]["name"]
    chosen = []
    for pod in pods:
        meta = pod["metadata"]
        template_hash = (meta.get("labels") or {}).get(POD_TEMPLATE_HASH)
        controller = next((ref for ref in meta.get("ownerReferences") or [] if ref.get("controller")), {})
        ours = controller.get("kind") == "ReplicaSet" and controller.get("name") == f"{name}-{template_hash}"
        if ours and not meta.get("deletionTimestamp") and _ready(pod) and (pod.get("status") or {}).get("podIP"):
            chosen.append(pod)
    return sorted(chosen, key=lambda pod: pod["metadata"]["name"])


def _port(pod: dict[str, Any]) -> int:
    for container in pod["spec"].get("containers") or []:
        if container.get("name") != naming.SERVER_CONTAINER:
            continue
        for port in container.get("ports") or []:
            if port.get("name") == PORT_NAME:
                return int(port["containerPort"])
    return runtime.SERVER_PORT


def ask(pod: dict[str, Any], timeout: float = TIMEOUT_SECONDS) -> ReplicaReport:
    """One pod's answer (never raises: a failure is the report's `error`)."""
    name, address = pod["metadata"]["name"], pod["status"]["podIP"]
    connection = http.client.HTTPConnection(address, _port(pod), timeout=timeout)
    try:
        connection.request("GET", ADAPTERS_PATH, headers={"Accept": "application/json"})
        response = connection.getresponse()
        body = response.read(1 << 20)
        if response.status != 200:
            return ReplicaReport(name, None, f"GET {ADAPTERS_PATH} answered {response.status}")
        answer = ReplicaAdapters.model_validate_json(body)
    except (OSError, http.client.HTTPException) as exc:
        return ReplicaReport(name, None, f"GET {ADAPTERS_PATH} failed: {exc}")
    except ValidationError:
        return ReplicaReport(name, None, f"GET {ADAPTERS_PATH} gave no adapter report")
    finally:
        connection.close()
    return ReplicaReport(name, {adapter.name: adapter for adapter in answer.adapters})


def ask_all(pods: list[dict[str, Any]], timeout: float = TIMEOUT_SECONDS) -> list[ReplicaReport]:
    if not pods:
        return []
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(pods))) as pool:
        return list(pool.map(lambda pod: ask(pod, timeout), pods))
