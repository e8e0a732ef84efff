"""The kubelet (and scheduler) a real control plane lacks, played as kwok does: pods are bound to a fake Node and
their status is written by the test. Everything else is real: the Job controller creates the pods and decides
success, retries (backoffLimit), podFailurePolicy and deadlines; the Deployment and ReplicaSet controllers roll
out servers; the garbage collector and namespace controller delete.

A background reaper finishes the deletion of pods bound to the fake Node (a real kubelet confirms a graceful
delete once the containers stopped), so suspend, garbage collection and namespace deletion complete.
"""

from __future__ import annotations

import datetime
import random
import socket
import threading
import time
from pathlib import Path
from typing import Any

from kubetune.api import runtime

from ..kube import hostrun
from ..kube.kubelet import JOB_NAME_LABELS, Kubelet, ServerProcess
from ..kube.server import DEPLOYMENTS, JOBS, PODS, KubeError, KubeTestClient

NODE_NAME = "envtest-node"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"  # annotation of an Indexed Job's pods
NODES = ("v1", "nodes")
NODE_CAPACITY = {"cpu": "64", "memory": "512Gi", "pods": "250", "ephemeral-storage": "1Ti", "nvidia.com/gpu": "8"}
REPLICASETS = ("apps/v1", "replicasets")


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pod_conditions(ready: bool) -> list[dict[str, Any]]:
    now = _now()
    value = "True" if ready else "False"
    return [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
        {"type": "Initialized", "status": "True", "lastTransitionTime": now},
        {"type": "ContainersReady", "status": value, "lastTransitionTime": now},
        {"type": "Ready", "status": value, "lastTransitionTime": now},
    ]


def _container_statuses(pod: dict[str, Any], state: dict[str, Any], ready: bool) -> list[dict[str, Any]]:
    return [
        {
            "name": container["name"],
            "image": container["image"],
            "imageID": "",
            "ready": ready,
            "started": "running" in state,
            "restartCount": 0,
            "state": state,
        }
        for container in pod["spec"]["containers"]
    ]


class FakeKubelet(Kubelet):
    """Same steps as the mock's `Kubelet` (start_job, finish_job, deployment_ready, run_job, serve_deployment),
    acting on the pods the real controllers created instead of writing controller status itself."""

    def __init__(self, client: KubeTestClient, timeout: float = 30) -> None:
        super().__init__(client)
        self.timeout = timeout
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name="fake-kubelet-reaper", daemon=True)

    # ---- the Node and the reaper -----------------------------------------------------------------
    def start(self) -> FakeKubelet:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE_NAME,
                "labels": {"kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux"},
            },
        }
        if self.client.find(NODES, None, NODE_NAME) is None:
            self.client.create(NODES, None, node)
        status = {
            "capacity": NODE_CAPACITY,
            "allocatable": NODE_CAPACITY,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": _now()}],
        }
        self.client.patch(NODES, None, NODE_NAME, {"status": status}, "status")
        self._reaper.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._reaper.is_alive():
            self._reaper.join(5)

    def _reap(self) -> None:
        """Finish graceful deletions of pods on the fake Node as a kubelet does: stop the containers (a running
        pod is reported Failed with exit 143, SIGTERM, so the Job controller can account it and drop its
        tracking finalizer), then confirm the deletion."""
        while not self._stop.wait(0.1):
            try:
                pods = self.client.http.get("/api/v1/pods", params={"fieldSelector": f"spec.nodeName={NODE_NAME}"})
                for pod in pods.json().get("items", []):
                    meta = pod["metadata"]
                    if not meta.get("deletionTimestamp"):
                        continue
                    if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                        self.terminate_pod(pod, 143, "stopped: the pod was deleted")
                    path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
                    self.client.http.delete(path, params={"gracePeriodSeconds": 0})
            except Exception:
                continue

    # ---- pods ---------------------------------------------------------------------------------------
    def pods_of(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        pods = self.client.list(PODS, namespace, f"{JOB_NAME_LABELS[0]}={job_name}")
        return [pod for pod in pods if not pod["metadata"].get("deletionTimestamp")]

    def _wait_pod(self, namespace: str, selector: str, predicate: Any, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while True:
            pods = [
                pod
                for pod in self.client.list(PODS, namespace, selector)
                if not pod["metadata"].get("deletionTimestamp") and predicate(pod)
            ]
            if pods:
                return sorted(pods, key=lambda pod: pod["metadata"]["creationTimestamp"])[-1]
            if time.monotonic() > deadline:
                events = [
                    f"{e['reason']}: {e.get('message', '')}"
                    for e in self.client.list(("v1", "events"), namespace)
                    if e["involvedObject"]["kind"] in ("Job", "ReplicaSet", "Deployment", "Pod")
                ]
                raise AssertionError(f"no pod {what} for {selector} after {self.timeout} s; events: {events}")
            time.sleep(0.05)

    def bind(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": NODE_NAME},
        }
        self.client.create_subresource(PODS, meta["namespace"], meta["name"], "binding", body)

    def run_pod(self, pod: dict[str, Any], ready: bool = True, pod_ip: str | None = None) -> dict[str, Any]:
        """Bind a pending pod and report its containers running (and ready), on `pod_ip` when given."""
        if not pod["spec"].get("nodeName"):
            self.bind(pod)
        status = {
            **({"podIP": pod_ip, "podIPs": [{"ip": pod_ip}]} if pod_ip else {}),
            "phase": "Running",
            "startTime": _now(),
            "conditions": _pod_conditions(ready),
            "containerStatuses": _container_statuses(pod, {"running": {"startedAt": _now()}}, ready),
        }
        meta = pod["metadata"]
        return self.client.patch(PODS, meta["namespace"], meta["name"], {"status": status}, "status")

    def terminate_pod(self, pod: dict[str, Any], exit_code: int, message: str = "") -> dict[str, Any]:
        terminated = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "message": message,
            "startedAt": _now(),
            "finishedAt": _now(),
        }
        status = {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "conditions": _pod_conditions(False),
            "containerStatuses": _container_statuses(pod, {"terminated": terminated}, False),
        }
        meta = pod["metadata"]
        return self.client.patch(PODS, meta["namespace"], meta["name"], {"status": status}, "status")

    # ---- Jobs (the real Job controller does the rest) ----------------------------------------------
    def start_job(self, namespace: str, name: str) -> dict[str, Any]:
        """Bind the pod the Job controller created and run it; wait until the Job counts it active."""
        selector = f"{JOB_NAME_LABELS[0]}={name}"
        pod = self._wait_pod(
            namespace, selector, lambda p: (p.get("status") or {}).get("phase") == "Pending", "pending"
        )
        self.run_pod(pod)
        return self._wait_job(namespace, name, lambda job: (job.get("status") or {}).get("ready", 0) >= 1, "ready")

    def finish_job(self, namespace: str, name: str, exit_code: int = 0, message: str = "") -> dict[str, Any]:
        """End the running pod with `exit_code` and termination `message`; the Job controller takes it from there."""
        selector = f"{JOB_NAME_LABELS[0]}={name}"
        pod = self._wait_pod(
            namespace, selector, lambda p: (p.get("status") or {}).get("phase") == "Running", "running"
        )
        self.terminate_pod(pod, exit_code, message)
        uid = pod["metadata"]["uid"]

        def counted(job: dict[str, Any]) -> bool:  # the controller accounted the pod (its tracking finalizer is gone)
            current = self.client.find(PODS, namespace, pod["metadata"]["name"])
            tracked = (
                current is not None and current["metadata"]["uid"] == uid and current["metadata"].get("finalizers")
            )
            return not tracked

        return self._wait_job(namespace, name, counted, "to account the finished pod")

    def _wait_job(self, namespace: str, name: str, predicate: Any, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while True:
            job = self.client.get(JOBS, namespace, name)
            if predicate(job):
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"Job {namespace}/{name} not {what} after {self.timeout} s: {job.get('status')}")
            time.sleep(0.05)

    def run_indexed_job(
        self,
        namespace: str,
        name: str,
        root: Path,
        claims_root: Path,
        env: dict[str, str] | None = None,
        timeout: float = 600,
    ) -> list[hostrun.HostRun]:
        """Run every pod of an Indexed Job at once, each its real container command on the host (as the nodes of
        a multi-node run), then finish each pod with its outcome; results in completion-index order. `env`
        overrides container variables the host cannot honour (a pod's DNS name: 127.0.0.1)."""
        job = self.client.get(JOBS, namespace, name)
        count = int(job["spec"].get("parallelism", 1))
        deadline = time.monotonic() + self.timeout
        while True:
            pending = [p for p in self.pods_of(namespace, name) if (p.get("status") or {}).get("phase") == "Pending"]
            if len(pending) >= count:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"Job {name}: {len(pending)} of {count} pods pending after {self.timeout} s")
            time.sleep(0.05)
        pods = sorted(pending, key=lambda p: int(p["metadata"]["annotations"][COMPLETION_INDEX]))
        processes = []
        for pod in pods:
            index = pod["metadata"]["annotations"][COMPLETION_INDEX]
            running = self.run_pod(pod)
            host = hostrun.prepare(
                self.client, namespace, running, root / f"pod-{index}", claims_root, pod_name=pod["metadata"]["name"]
            )
            log = root / f"pod-{index}.log"
            processes.append((running, host, log, hostrun.start(host, env, log)))
        results = []
        for running, host, log, process in processes:
            try:
                process.wait(timeout)
            finally:
                if process.poll() is None:
                    process.kill()
            output = log.read_text() if log.exists() else ""
            message = host.termination_log.read_text() if host.termination_log.exists() else ""
            if not message.strip() and host.fallback_to_logs and process.returncode != 0:
                message = "\n".join(output.splitlines()[-hostrun.LOG_TAIL_LINES :])
            results.append(hostrun.HostRun(process.returncode, output, "", message))
            self.terminate_pod(running, process.returncode, message)
        return results

    def exceed_deadline(self, namespace: str, name: str) -> dict[str, Any]:
        raise NotImplementedError("the real Job controller enforces activeDeadlineSeconds: set a short one and wait")

    def sync_suspend(self, namespace: str, name: str) -> dict[str, Any]:
        raise NotImplementedError("the real Job controller handles suspend; the reaper completes the pod deletions")

    # ---- Deployments (the real Deployment and ReplicaSet controllers do the rest) ------------------
    def serve_deployment(
        self,
        namespace: str,
        name: str,
        root: Path,
        claims_root: Path | None = None,
        timeout: float = 120,
        pod_ip: str | None = None,
    ) -> ServerProcess:
        """Run the Deployment's server container on the host as its pod would run: on a pod IP of its own (a free
        loopback address 127.x.y.z, reported as the pod's status.podIP) and the container's own port, so the
        operator reaches it as in a cluster. `.refresh_config()` plays the kubelet's later ConfigMap refresh; a
        `pod_ip` given restarts the container of a pod that runs there already."""
        deployment = self.client.get(DEPLOYMENTS, namespace, name)
        template = deployment["spec"]["template"]
        host = hostrun.prepare(self.client, namespace, template, root, claims_root, pod_name=f"{name}-0")
        container = template["spec"]["containers"][0]
        port = _serving_port(container)
        pod_ip = pod_ip or _free_loopback_address(port)
        process = hostrun.start(host, {runtime.ENV_HOST: pod_ip, runtime.ENV_PORT: str(port)}, root / f"{name}.log")
        server = ServerProcess(process, f"http://{pod_ip}:{port}", root / f"{name}.log")
        server.refresh_config = lambda: hostrun.refresh_configmaps(self.client, namespace, template, root)
        try:
            server.wait_ready(container["readinessProbe"]["httpGet"]["path"], timeout)
            self.deployment_ready(namespace, name, pod_ip=pod_ip)
        except BaseException:
            server.stop()
            raise
        return server

    def deployment_ready(
        self, namespace: str, name: str, ready: int | None = None, pod_ip: str | None = None
    ) -> dict[str, Any]:
        """Run and ready the pods of the Deployment's newest ReplicaSet; wait until the rollout is complete."""
        deployment = self.client.get(DEPLOYMENTS, namespace, name)
        wanted = int(deployment["spec"].get("replicas", 1)) if ready is None else ready
        selector = ",".join(f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items())
        deadline = time.monotonic() + self.timeout
        while True:
            deployment = self.client.get(DEPLOYMENTS, namespace, name)
            current = self._newest_replicaset(namespace, deployment, selector)
            if current is not None:
                owned = [
                    pod
                    for pod in self.client.list(PODS, namespace, selector)
                    if not pod["metadata"].get("deletionTimestamp")
                    and any(
                        ref["uid"] == current["metadata"]["uid"] for ref in pod["metadata"].get("ownerReferences", [])
                    )
                ]
                ready_now = [pod for pod in owned if _is_ready(pod)]
                for pod in owned:
                    if len(ready_now) >= wanted:
                        break
                    if not _is_ready(pod):
                        self.run_pod(pod, pod_ip=pod_ip)
                        ready_now.append(pod)
                status = deployment.get("status") or {}
                done = (
                    status.get("observedGeneration", 0) >= deployment["metadata"]["generation"]
                    and status.get("updatedReplicas", 0) >= wanted
                    and status.get("availableReplicas", 0) >= wanted
                )
                if done and len(ready_now) >= wanted:
                    return deployment
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"Deployment {namespace}/{name} not rolled out after {self.timeout} s: {deployment.get('status')}"
                )
            time.sleep(0.05)

    def _newest_replicaset(self, namespace: str, deployment: dict[str, Any], selector: str) -> dict[str, Any] | None:
        revision = deployment["metadata"].get("annotations", {}).get("deployment.kubernetes.io/revision")
        for replicaset in self.client.list(REPLICASETS, namespace, selector):
            owners = replicaset["metadata"].get("ownerReferences", [])
            if not any(ref["uid"] == deployment["metadata"]["uid"] for ref in owners):
                continue
            if replicaset["metadata"].get("annotations", {}).get("deployment.kubernetes.io/revision") == revision:
                return replicaset
        return None

    def deployment_deadline_exceeded(self, namespace: str, name: str) -> dict[str, Any]:
        raise NotImplementedError("the real Deployment controller reports ProgressDeadlineExceeded: leave pods pending")


def _serving_port(container: dict[str, Any]) -> int:
    """The port the container serves on: its port named `http`, else its readiness probe's, else its first."""
    ports = container.get("ports") or []
    named = [p["containerPort"] for p in ports if p.get("name") == "http"]
    probe = ((container.get("readinessProbe") or {}).get("httpGet") or {}).get("port")
    if named:
        return int(named[0])
    if isinstance(probe, int):
        return probe
    if ports:
        return int(ports[0]["containerPort"])
    raise ValueError(f"container {container['name']!r} names no port to serve on")


def _free_loopback_address(port: int) -> str:
    """A 127.x.y.z address (all of 127/8 is this machine's loopback on Linux) where `port` is free."""
    for _ in range(50):
        address = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
        with socket.socket() as sock:
            try:
                sock.bind((address, port))
            except OSError:
                continue
            return address
    raise RuntimeError(f"no loopback address with port {port} free")


def _is_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


__all__ = ["NODE_NAME", "FakeKubelet", "KubeError"]
