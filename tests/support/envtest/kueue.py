"""Kueue's job-integration contract, played against the real API server (Kueue itself is not run).

What Kueue does to a batch/v1 Job labelled `kueue.x-k8s.io/queue-name` (kueue.sigs.k8s.io, its jobframework
reconciler): its webhook creates the Job suspended; it creates a Workload controlled by the Job and labelled
`kueue.x-k8s.io/job-uid`; it admits the Job by unsuspending it and merging the admitted ResourceFlavor's node
selector into the pod template, posting a `Started` Event; it preempts (evicts) by suspending it again and
restoring the pod template, posting `Stopped`; a Workload with `spec.active: false` is evicted and not requeued.
"""

from __future__ import annotations

import uuid
from typing import Any

from tests.support.kube.server import JOBS, KubeTestClient

WORKLOADS = ("kueue.x-k8s.io/v1beta1", "workloads")
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"

# A stand-in for Kueue's Workload CRD: same group, version, names and scope; the schema keeps what it is given.
WORKLOAD_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "workloads.kueue.x-k8s.io"},
    "spec": {
        "group": "kueue.x-k8s.io",
        "names": {"kind": "Workload", "listKind": "WorkloadList", "plural": "workloads", "singular": "workload"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1beta1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        },
                    }
                },
            }
        ],
    },
}


class FakeKueue:
    """Plays Kueue's writes on the Jobs of one namespace (as the admin, as Kueue's own account would)."""

    def __init__(self, client: KubeTestClient, namespace: str) -> None:
        self.client, self.namespace = client, namespace

    def job(self, name: str) -> dict[str, Any]:
        return self.client.get(JOBS, self.namespace, name)

    def create_workload(self, job_name: str) -> dict[str, Any]:
        job = self.job(job_name)
        meta = job["metadata"]
        body = {
            "apiVersion": WORKLOADS[0],
            "kind": "Workload",
            "metadata": {
                "name": f"job-{job_name}-{uuid.uuid4().hex[:5]}",
                "namespace": self.namespace,
                "labels": {JOB_UID_LABEL: meta["uid"]},
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": job_name,
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {"queueName": meta["labels"][QUEUE_LABEL], "podSets": [{"name": "main", "count": 1}]},
        }
        return self.client.create(WORKLOADS, self.namespace, body)

    def workloads(self, job_name: str) -> list[dict[str, Any]]:
        uid = self.job(job_name)["metadata"]["uid"]
        return self.client.list(WORKLOADS, self.namespace, f"{JOB_UID_LABEL}={uid}")

    def admit(self, job_name: str, node_selector: dict[str, str]) -> dict[str, Any]:
        """Unsuspend the Job and inject the flavor's node selector (one write, as Kueue's startJob does)."""
        selector = {**(self.job(job_name)["spec"]["template"]["spec"].get("nodeSelector") or {}), **node_selector}
        patch = {"spec": {"suspend": False, "template": {"spec": {"nodeSelector": selector}}}}
        return self.client.patch(JOBS, self.namespace, job_name, patch)

    def preempt(self, job_name: str, injected: dict[str, str], timeout: float = 30) -> dict[str, Any]:
        """Suspend the Job, then restore its pod template's node selector (Kueue's stop on eviction). The API server
        lets the template change only once the Job is suspended and the Job controller has cleared its startTime,
        so these are two writes, as Kueue's own Job integration makes them."""
        self.client.patch(JOBS, self.namespace, job_name, {"spec": {"suspend": True}})
        stopped = self.client.wait_for(
            JOBS,
            self.namespace,
            job_name,
            lambda job: job is not None and not (job.get("status") or {}).get("startTime"),
            timeout,
            what="to be stopped by the Job controller (startTime cleared)",
        )
        assert stopped is not None
        patch = {"spec": {"template": {"spec": {"nodeSelector": dict.fromkeys(injected)}}}}
        return self.client.patch(JOBS, self.namespace, job_name, patch)
