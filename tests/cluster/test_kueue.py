"""Kueue on the real control plane: a FineTuneJob with spec.queueName, with Kueue's job-integration contract played
against the real API server and the real Job controller (tests/support/envtest/kueue.py). The operator neither
fights Kueue's suspend/unsuspend nor loses the job, and shows Kueue's state in phase and conditions."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
from kubetune.api import runtime
from kubetune_trainer.checkpoints import COMPLETE_MARKER, newest_complete_checkpoint

from tests.support.envtest.kueue import QUEUE_LABEL, WORKLOAD_CRD, FakeKueue
from tests.support.kube import hostrun
from tests.support.kube.server import FTJ, JOBS, PODS
from tests.support.tiny_model import build_tiny_model, write_facts_jsonl
from tests.trainer.helpers import base_spec

from .helpers import condition, finetunejob, operator_requests, wait_event, wait_phase, wait_until

GPU_FLAVOR = {"cloud.google.com/gke-accelerator": "nvidia-l4"}
PASS_THROUGH = {
    "labels": {"team": "nlp", "kueue.x-k8s.io/priority-class": "research"},
    "annotations": {"cost.example.com/center": "4711"},
}


@pytest.fixture(scope="module")
def workload_crd(control_plane):
    control_plane.apply_crds([WORKLOAD_CRD])


def _queued_job(kube, ns: str) -> dict:
    return kube.wait_for(JOBS, ns, "sentiment-train", lambda job: job is not None, what="to be created")


def _job_suspend_patches(cluster, since: int) -> list:
    """The operator's patches of Jobs after audit offset `since` (none may touch a queued Job's suspend)."""
    return operator_requests(cluster, since, "patch", "jobs")


def test_kueue_admits_preempts_and_readmits(control_plane, operator, kube, kubelet, ns, workload_crd):
    kube.create(FTJ, ns, finetunejob(ns, queueName="team-a", workloadMetadata=PASS_THROUGH))
    job = _queued_job(kube, ns)
    # Created as Kueue's webhook leaves it: suspended, with the queue label; the pass-through metadata is on the
    # Job (Kueue reads its priority class there) and on the pod template (every pod carries the cost label).
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"][QUEUE_LABEL] == "team-a"
    assert job["metadata"]["labels"]["team"] == "nlp"
    assert job["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "research"
    assert job["metadata"]["annotations"]["cost.example.com/center"] == "4711"
    template = job["spec"]["template"]["metadata"]
    assert template["labels"]["team"] == "nlp" and template["annotations"]["cost.example.com/center"] == "4711"
    assert template["labels"]["kubetune.dev/finetunejob"] == "sentiment"  # the operator's own labels stay
    ftj = wait_phase(kube, ns, "sentiment", "Queued")
    assert condition(ftj, "Admitted")["reason"] == "Queued"
    assert "team-a" in ftj["status"]["message"]

    kueue = FakeKueue(kube, ns)
    kueue.create_workload("sentiment-train")
    since = control_plane.audit.offset()
    kueue.admit("sentiment-train", GPU_FLAVOR)
    kubelet.start_job(ns, "sentiment-train")
    ftj = wait_phase(kube, ns, "sentiment", "Running")
    assert condition(ftj, "Admitted")["status"] == "True"
    pod = kubelet.pods_of(ns, "sentiment-train")[0]
    assert pod["spec"]["nodeSelector"] == GPU_FLAVOR  # Kueue's injected placement reached the pod
    assert kube.get(JOBS, ns, "sentiment-train")["spec"]["suspend"] is False

    # Preemption: Kueue suspends the Job again; the real Job controller deletes the pod.
    kueue.preempt("sentiment-train", GPU_FLAVOR)
    ftj = wait_phase(kube, ns, "sentiment", "Queued")
    admitted = condition(ftj, "Admitted")
    assert (admitted["status"], admitted["reason"]) == ("False", "Preempted")
    assert "checkpoint" in admitted["message"]
    assert "Preempted" in wait_event(kube, ns, "sentiment", "Preempted")
    wait_until(lambda: not kubelet.pods_of(ns, "sentiment-train"), "the Job controller to delete the pod")
    # Not fought: the Job stays suspended, and the operator sent no patch to it since Kueue took over.
    assert kube.get(JOBS, ns, "sentiment-train")["spec"]["suspend"] is True
    assert _job_suspend_patches(control_plane, since) == []

    # Re-admitted (say on another flavor): a new pod runs; the trainer in it resumes from the newest checkpoint.
    kueue.admit("sentiment-train", {"cloud.google.com/gke-accelerator": "nvidia-a100"})
    kubelet.start_job(ns, "sentiment-train")
    ftj = wait_phase(kube, ns, "sentiment", "Running")
    assert condition(ftj, "Admitted")["status"] == "True"
    metrics = {"trainLoss": 1.0, "steps": 4}
    kube.patch(FTJ, ns, "sentiment", {"status": {"metrics": metrics}}, "status")
    kubelet.finish_job(ns, "sentiment-train", 0, json.dumps({"exitReason": "Succeeded", "metrics": metrics}))
    ftj = wait_phase(kube, ns, "sentiment", "Succeeded")  # not lost: one Job, admitted twice, finished
    assert ftj["status"]["jobName"] == "sentiment-train"
    assert _job_suspend_patches(control_plane, since) == []
    assert len(kueue.workloads("sentiment-train")) == 1


def test_suspending_a_queued_job_deactivates_its_workload(control_plane, operator, kube, kubelet, ns, workload_crd):
    kube.create(FTJ, ns, finetunejob(ns, queueName="team-a"))
    _queued_job(kube, ns)
    kueue = FakeKueue(kube, ns)
    workload = kueue.create_workload("sentiment-train")
    kueue.admit("sentiment-train", GPU_FLAVOR)
    kubelet.start_job(ns, "sentiment-train")
    wait_phase(kube, ns, "sentiment", "Running")

    kube.patch(FTJ, ns, "sentiment", {"spec": {"suspend": True}})
    ftj = wait_phase(kube, ns, "sentiment", "Suspended")
    assert condition(ftj, "Admitted")["reason"] == "Suspended"
    # Kueue's documented stop: the Workload is deactivated (else Kueue would unsuspend the still admitted Job).
    name = workload["metadata"]["name"]
    wait_until(lambda: kueue.workloads("sentiment-train")[0]["spec"].get("active") is False, "a deactivated Workload")
    job = kube.get(JOBS, ns, "sentiment-train")
    assert job["spec"]["suspend"] is True and job["metadata"]["annotations"]["kubetune.dev/suspend"] == "true"
    wait_until(lambda: not kube.list(PODS, ns, "batch.kubernetes.io/job-name=sentiment-train"), "the pod to go")

    since = control_plane.audit.offset()
    kube.patch(FTJ, ns, "sentiment", {"spec": {"suspend": False}})
    wait_until(lambda: kueue.workloads("sentiment-train")[0]["spec"].get("active") is True, "an active Workload")
    ftj = wait_phase(kube, ns, "sentiment", "Queued")  # back in the queue, waiting for Kueue's admission
    assert condition(ftj, "Admitted")["reason"] == "Queued"
    job = kube.get(JOBS, ns, "sentiment-train")
    assert job["spec"]["suspend"] is True  # resuming is Kueue's to do: the operator only recorded the change
    assert job["metadata"]["annotations"]["kubetune.dev/suspend"] == "false"
    patched = [event.uri for event in operator_requests(control_plane, since, "patch", "workloads")]
    assert patched and all(name in uri for uri in patched)


@pytest.mark.slow
def test_a_preempted_trainer_resumes_from_its_checkpoint(operator, kube, kubelet, ns, workload_crd, tmp_path: Path):
    """The real trainer, run by the test kubelet from the pod the real Job controller created, is preempted by
    Kueue after its first checkpoint (its pod deleted, its process stopped) and resumes from it when re-admitted."""
    claims = tmp_path / "claims"
    build_tiny_model(claims / "models" / "tiny")
    write_facts_jsonl(claims / "data" / "facts.jsonl", fmt="alpaca")
    spec = base_spec(training={"saveSteps": 10, "saveTotalLimit": 10}, queueName="team-a")
    spec["dataset"]["format"] = "alpaca"
    body = {"apiVersion": "kubetune.dev/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "facts"}, "spec": spec}
    kube.create(FTJ, ns, body)
    job = kube.wait_for(JOBS, ns, "facts-train", lambda j: j is not None, what="to be created")
    assert job["spec"]["suspend"] is True
    kueue = FakeKueue(kube, ns)
    kueue.create_workload("facts-train")
    kueue.admit("facts-train", GPU_FLAVOR)

    kubelet.start_job(ns, "facts-train")
    pod = kubelet.running_pod(ns, "facts-train")
    host = hostrun.prepare(kube, ns, pod, tmp_path / "first", claims, pod_name=pod["metadata"]["name"])
    first = hostrun.start(host, log=tmp_path / "first.log")
    run_dir = claims / "facts-output" / runtime.RUNS_DIR / kube.get(FTJ, ns, "facts")["metadata"]["uid"]
    checkpoints = run_dir / runtime.CHECKPOINTS_DIR
    try:
        wait_until(
            lambda: (checkpoints / "checkpoint-10" / COMPLETE_MARKER).exists() or first.poll() is not None,
            "the first checkpoint",
            timeout=300,
        )
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        kueue.preempt("facts-train", GPU_FLAVOR)  # the Job controller deletes the pod ...
    finally:
        first.send_signal(signal.SIGTERM)  # ... and the kubelet stops its container
        try:
            first.wait(30)
        except subprocess.TimeoutExpired:
            first.kill()
            first.wait(30)
    ftj = wait_phase(kube, ns, "facts", "Queued")
    assert condition(ftj, "Admitted")["reason"] == "Preempted"
    saved = newest_complete_checkpoint(checkpoints)
    assert saved is not None and not (run_dir / runtime.ADAPTER_DIR).exists()

    kueue.admit("facts-train", GPU_FLAVOR)
    run = kubelet.run_job(ns, "facts-train", tmp_path / "second", claims_root=claims)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"resuming from {saved}" in run.stdout + run.stderr
    ftj = wait_phase(kube, ns, "facts", "Succeeded", "Failed")
    assert ftj["status"]["phase"] == "Succeeded", ftj["status"]
    assert ftj["status"]["metrics"]["steps"] == spec["training"]["maxSteps"]
