"""Pod-level building blocks shared by the trainer Job and the server Deployment."""

from __future__ import annotations

from typing import Any

from kubetune.api.runtime import SHM_DIR
from kubetune.api.sources import SecretKeyRef, Toleration


def pod_security_context(fs_group: int | None = None) -> dict[str, Any]:
    """The restricted Pod Security Standard at pod level: non-root, default seccomp profile. No UID or group is
    set: the images declare a numeric non-root USER (which the kubelet can check against runAsNonRoot), and
    OpenShift's restricted-v2 assigns its own (refusing fixed ones outside the namespace's range). `fs_group`
    only where an administrator sets one (operator setting `pod_fs_group`)."""
    context: dict[str, Any] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    if fs_group is not None:
        context["fsGroup"] = fs_group
    return context


def container_security_context() -> dict[str, Any]:
    """The restricted Pod Security Standard at container level."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def resources(
    cpu: str | None,
    memory: str | None,
    gpus: int,
    gpu_resource_name: str,
    default_cpu: str | None = None,
    default_memory: str | None = None,
    request_cpu: str | None = None,
    request_memory: str | None = None,
) -> dict[str, Any]:
    """Requests equal limits for cpu and memory (predictable placement); GPUs as limits. Where neither the spec
    nor a default gives a value, `request_*` is a request alone (never BestEffort, no limit guessed)."""
    limits: dict[str, str] = {}
    requests: dict[str, str] = {}
    for name, value, floor in (
        ("cpu", cpu or default_cpu, request_cpu),
        ("memory", memory or default_memory, request_memory),
    ):
        if value:
            limits[name] = requests[name] = str(value)
        elif floor:
            requests[name] = str(floor)
    if gpus > 0:
        limits[gpu_resource_name] = str(gpus)
    result: dict[str, Any] = {}
    if requests:
        result["requests"] = requests
    if limits:
        result["limits"] = limits
    return result


def tolerations(items: list[Toleration]) -> list[dict[str, Any]]:
    return [item.to_wire() for item in items]


def scheduling(node_selector: dict[str, str], tolerations_: list[Toleration], priority: str | None) -> dict[str, Any]:
    """nodeSelector, tolerations and priorityClassName, each only when set."""
    spec: dict[str, Any] = {}
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if tolerations_:
        spec["tolerations"] = tolerations(tolerations_)
    if priority:
        spec["priorityClassName"] = priority
    return spec


def env_value(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def env_secret(name: str, ref: SecretKeyRef) -> dict[str, Any]:
    """An env var from a Secret key: the value never appears in the manifest."""
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}


def claim_volume(volume: str, claim: str, read_only: bool) -> dict[str, Any]:
    source: dict[str, Any] = {"claimName": claim}
    if read_only:
        source["readOnly"] = True
    return {"name": volume, "persistentVolumeClaim": source}


def configmap_volume(volume: str, configmap: str, keys: list[str] | None = None) -> dict[str, Any]:
    source: dict[str, Any] = {"name": configmap}
    if keys:
        source["items"] = [{"key": key, "path": key} for key in keys]
    return {"name": volume, "configMap": source}


def shm_volume(size: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A memory-backed /dev/shm (the container default of 64 MiB starves data loaders and NCCL)."""
    return {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": size}}, mount("dshm", SHM_DIR)


def mount(volume: str, path: str, read_only: bool = False) -> dict[str, Any]:
    item: dict[str, Any] = {"name": volume, "mountPath": path}
    if read_only:
        item["readOnly"] = True
    return item


class Volumes:
    """Collects volumes and mounts, mounting each claim once (read-write wins over read-only)."""

    def __init__(self) -> None:
        self.volumes: list[dict[str, Any]] = []
        self.mounts: list[dict[str, Any]] = []
        self._claims: dict[str, int] = {}

    def add(self, volume: dict[str, Any], volume_mount: dict[str, Any]) -> None:
        if any(existing["name"] == volume["name"] for existing in self.volumes):
            return
        self.volumes.append(volume)
        self.mounts.append(volume_mount)

    def add_claim(self, volume: str, claim: str, path: str, read_only: bool) -> None:
        if claim in self._claims:
            index = self._claims[claim]
            if not read_only:  # an output on an input's claim: the one mount becomes writable
                self.volumes[index]["persistentVolumeClaim"].pop("readOnly", None)
                self.mounts[index].pop("readOnly", None)
            return
        self._claims[claim] = len(self.volumes)
        self.volumes.append(claim_volume(volume, claim, read_only))
        self.mounts.append(mount(volume, path, read_only))
