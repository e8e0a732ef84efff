"""Plays the kubelet and the Job and Deployment controllers against the mock API server.

Tests drive it step by step (start a Job's pod, finish it with an exit code and termination message,
make a Deployment ready), so every scenario is deterministic. `hostrun` can run a pod's real container
command on this machine for the end-to-end tests.
"""

from __future__ import annotations

import datetime
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from kubetune.api import runtime

from . import hostrun
from .server import DEPLOYMENTS, JOBS, PODS, KubeTestClient

KUBELET_AGENT = "kubetune-test-kubelet/1"
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(type_: str, reason: str, message: str = "", status: str = "True") -> dict[str, Any]:
    now = _now()
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastProbeTime": now,
        "lastTransitionTime": now,
    }


class Kubelet:
    """The controllers a real cluster runs, reduced to what the operator observes."""

    def __init__(self, client: KubeTestClient) -> None:
        self.client = client

    # ---- Job controller + kubelet -----------------------------------------------------------
    def job(self, namespace: str, name: str) -> dict[str, Any]:
        return self.client.get(JOBS, namespace, name)

    def pods_of(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        return self.client.list(PODS, namespace, f"{JOB_NAME_LABELS[0]}={job_name}")

    def start_job(self, namespace: str, name: str) -> dict[str, Any]:
        """Create the Job's pod and mark it running (active=1), as the Job controller and kubelet would."""
        job = self.job(namespace, name)
        if job["spec"].get("suspend"):
            raise AssertionError(f"Job {name} is suspended: the Job controller would not start a pod")
        index = len(self.pods_of(namespace, name))
        template = job["spec"]["template"]
        labels = dict(template["metadata"].get("labels") or {})
        labels.update({label: name for label in JOB_NAME_LABELS})
        labels["batch.kubernetes.io/controller-uid"] = job["metadata"]["uid"]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{name}-{index}",
                "namespace": namespace,
                "labels": labels,
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": name,
                        "uid": job["metadata"]["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": template["spec"],
        }
        self.client.create(PODS, namespace, pod)
        container = template["spec"]["containers"][0]["name"]
        self.client.patch(
            PODS,
            namespace,
            pod["metadata"]["name"],
            {
                "status": {
                    "phase": "Running",
                    "startTime": _now(),
                    "containerStatuses": [
                        {
                            "name": container,
                            "ready": True,
                            "restartCount": 0,
                            "image": "x",
                            "imageID": "x",
                            "started": True,
                            "state": {"running": {"startedAt": _now()}},
                        }
                    ],
                }
            },
            "status",
        )
        status = job.get("status") or {}
        patch = {"active": 1, "ready": 1, "startTime": status.get("startTime") or _now()}
        return self.client.patch(JOBS, namespace, name, {"status": patch}, "status")

    def finish_job(self, namespace: str, name: str, exit_code: int = 0, message: str = "") -> dict[str, Any]:
        """End the running pod with `exit_code` and termination `message`, then apply the Job's rules."""
        job = self.job(namespace, name)
        running = [p for p in self.pods_of(namespace, name) if (p.get("status") or {}).get("phase") == "Running"]
        if not running:
            raise AssertionError(f"Job {name} has no running pod to finish")
        pod = running[-1]
        container = job["spec"]["template"]["spec"]["containers"][0]["name"]
        terminated = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "message": message,
            "startedAt": _now(),
            "finishedAt": _now(),
        }
        self.client.patch(
            PODS,
            namespace,
            pod["metadata"]["name"],
            {
                "status": {
                    "phase": "Succeeded" if exit_code == 0 else "Failed",
                    "containerStatuses": [
                        {
                            "name": container,
                            "ready": False,
                            "restartCount": 0,
                            "image": "x",
                            "imageID": "x",
                            "state": {"terminated": terminated},
                        }
                    ],
                }
            },
            "status",
        )
        status = dict(job.get("status") or {})
        status["active"], status["ready"] = 0, 0
        if exit_code == 0:
            status["succeeded"] = 1
            status["completionTime"] = _now()
            status["conditions"] = [
                _condition("SuccessCriteriaMet", "CompletionsReached"),
                _condition("Complete", "CompletionsReached"),
            ]
            return self.client.patch(JOBS, namespace, name, {"status": status}, "status")
        status["failed"] = int(status.get("failed") or 0) + 1
        rule = self._matching_rule(job, container, exit_code)
        if rule == "FailJob":
            why = (
                f"Container {container} for pod {namespace}/{pod['metadata']['name']} failed with exit code "
                f"{exit_code} matching FailJob rule at index 0"
            )
            status["conditions"] = [
                _condition("FailureTarget", "PodFailurePolicy", why),
                _condition("Failed", "PodFailurePolicy", why),
            ]
        elif status["failed"] > int(job["spec"].get("backoffLimit", 6)):
            why = "Job has reached the specified backoff limit"
            status["conditions"] = [
                _condition("FailureTarget", "BackoffLimitExceeded", why),
                _condition("Failed", "BackoffLimitExceeded", why),
            ]
        result = self.client.patch(JOBS, namespace, name, {"status": status}, "status")
        if "conditions" not in status:  # retried: the controller starts a new pod
            result = self.start_job(namespace, name)
        return result

    def running_pod(self, namespace: str, name: str) -> dict[str, Any]:
        """The Job's newest running pod (earlier attempts may have failed)."""
        running = [p for p in self.pods_of(namespace, name) if (p.get("status") or {}).get("phase") == "Running"]
        if not running:
            raise AssertionError(f"Job {name} has no running pod")
        return sorted(running, key=lambda pod: pod["metadata"].get("creationTimestamp") or "")[-1]

    @staticmethod
    def _matching_rule(job: dict[str, Any], container: str, exit_code: int) -> str | None:
        for rule in (job["spec"].get("podFailurePolicy") or {}).get("rules") or []:
            codes = rule.get("onExitCodes")
            if not codes or codes.get("containerName") not in (None, container):
                continue
            hit = exit_code in codes.get("values", [])
            if hit == (codes.get("operator") == "In"):
                return rule["action"]
        return None

    def exceed_deadline(self, namespace: str, name: str) -> dict[str, Any]:
        """activeDeadlineSeconds passed: pods are killed and the Job fails with DeadlineExceeded."""
        for pod in self.pods_of(namespace, name):
            self.client.delete(PODS, namespace, pod["metadata"]["name"])
        why = "Job was active longer than specified deadline"
        status = {
            "active": 0,
            "ready": 0,
            "conditions": [
                _condition("FailureTarget", "DeadlineExceeded", why),
                _condition("Failed", "DeadlineExceeded", why),
            ],
        }
        return self.client.patch(JOBS, namespace, name, {"status": status}, "status")

    def sync_suspend(self, namespace: str, name: str) -> dict[str, Any]:
        """Honour spec.suspend: delete the pods and set Suspended=True, or clear it when resumed."""
        job = self.job(namespace, name)
        conditions = [c for c in (job.get("status") or {}).get("conditions") or [] if c["type"] != "Suspended"]
        if job["spec"].get("suspend"):
            for pod in self.pods_of(namespace, name):
                self.client.delete(PODS, namespace, pod["metadata"]["name"])
            conditions.append(_condition("Suspended", "JobSuspended", "Job suspended"))
            status = {"active": 0, "ready": 0, "conditions": conditions}
        else:
            conditions.append(_condition("Suspended", "JobResumed", "Job resumed", status="False"))
            status = {"conditions": conditions}
        return self.client.patch(JOBS, namespace, name, {"status": status}, "status")

    def run_job(
        self, namespace: str, name: str, root: Path, claims_root: Path | None = None, timeout: float = 600
    ) -> hostrun.HostRun:
        """Start the Job's pod, run its real container command on the host, finish the pod with the outcome.

        What runs is the pod as stored (after admission, e.g. a real server's service-account volume) under its
        own name, not the Job's template."""
        self.start_job(namespace, name)
        pod = self.running_pod(namespace, name)
        host = hostrun.prepare(self.client, namespace, pod, root, claims_root, pod_name=pod["metadata"]["name"])
        result = hostrun.run(host, timeout)
        self.finish_job(namespace, name, result.returncode, result.message)
        return result

    def serve_deployment(
        self, namespace: str, name: str, root: Path, claims_root: Path | None = None, timeout: float = 120
    ) -> ServerProcess:
        """Run the Deployment's container on the host on a free port; once its readiness probe passes,
        mark the Deployment ready. Stop it with `.stop()`."""
        deployment = self.client.get(DEPLOYMENTS, namespace, name)
        template = deployment["spec"]["template"]
        host = hostrun.prepare(self.client, namespace, template, root, claims_root, pod_name=f"{name}-0")
        container = template["spec"]["containers"][0]
        port = _free_port()
        env = {runtime.ENV_PORT: str(port), runtime.ENV_HOST: "127.0.0.1"}
        process = hostrun.start(host, env, root / f"{name}.log")
        ready_path = ((container.get("readinessProbe") or {}).get("httpGet") or {}).get("path", "/")
        server = ServerProcess(process, f"http://127.0.0.1:{port}", root / f"{name}.log")
        try:
            server.wait_ready(ready_path, timeout)
        except BaseException:
            server.stop()
            raise
        self.deployment_ready(namespace, name)
        return server

    # ---- Deployment controller --------------------------------------------------------------
    def deployment_ready(self, namespace: str, name: str, ready: int | None = None) -> dict[str, Any]:
        deployment = self.client.get(DEPLOYMENTS, namespace, name)
        wanted = int(deployment["spec"].get("replicas", 1))
        ready = wanted if ready is None else ready
        status = {
            "observedGeneration": deployment["metadata"].get("generation", 1),
            "replicas": wanted,
            "updatedReplicas": wanted,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "conditions": [
                _deployment_condition("Available", "True" if ready else "False", "MinimumReplicasAvailable"),
                _deployment_condition("Progressing", "True", "NewReplicaSetAvailable"),
            ],
        }
        return self.client.patch(DEPLOYMENTS, namespace, name, {"status": status}, "status")

    def deployment_deadline_exceeded(self, namespace: str, name: str) -> dict[str, Any]:
        status = {
            "replicas": 1,
            "readyReplicas": 0,
            "conditions": [
                _deployment_condition("Available", "False", "MinimumReplicasUnavailable"),
                _deployment_condition(
                    "Progressing", "False", "ProgressDeadlineExceeded", "ReplicaSet has timed out progressing."
                ),
            ],
        }
        return self.client.patch(DEPLOYMENTS, namespace, name, {"status": status}, "status")


def _deployment_condition(type_: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    now = _now()
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    """A server container running on the host."""

    process: subprocess.Popen
    url: str
    log: Path
    refresh_config: Any = None  # plays the kubelet's refresh of mounted ConfigMaps (envtest FakeKubelet)

    def wait_ready(self, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.url}{path} not ready after {timeout} s: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
