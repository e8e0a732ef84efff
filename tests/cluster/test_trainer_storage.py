"""The trainer's volume on the real control plane, with the real trainer run by the fake kubelet (hostrun):
every FineTuneJob writes under its own `runs/<uid>` folder, so one deleted and created again under the same name
trains from scratch instead of resuming (and publishing) the old run's checkpoints; and a SIGTERM (spot
preemption, eviction, drain) checkpoints the step reached, exits 69, which the real Job controller's
podFailurePolicy does not count (backoffLimit 0 here), and the replacement pod resumes from that very step."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
from kubetune.api import runtime
from kubetune.operator import naming

from tests.support.envtest.fixtures import RealOperatorControl
from tests.support.envtest.kubelet import FakeKubelet
from tests.support.kube import hostrun
from tests.support.kube.server import FTJ, JOBS, PODS, KubeTestClient
from tests.support.tiny_model import build_tiny_model, write_facts_jsonl
from tests.trainer.helpers import LEARNING_TRAINING

from .helpers import condition, delete, exists, gone, wait_phase, wait_until

pytestmark = pytest.mark.slow

TIMEOUT = 60


def tiny_job(ns: str, training: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """A FineTuneJob `facts` training the tiny model on the facts, writing to folder `facts` of claim `results`."""
    return {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "facts", "namespace": ns},
        "spec": {
            "baseModel": {"pvc": {"claimName": "models", "path": "tiny"}},
            "dataset": {"pvc": {"claimName": "data", "path": "facts.jsonl"}, "format": "alpaca", "evalFraction": 0.1},
            "training": {**LEARNING_TRAINING, **training},
            "resources": {"gpus": 0, "cpu": "1", "memory": "2Gi"},
            "output": {"pvc": {"claimName": "results", "path": "facts"}},
            **spec,
        },
    }


@pytest.fixture
def claims(tmp_path: Path) -> Path:
    root = tmp_path / "claims"
    build_tiny_model(root / "models" / "tiny")
    write_facts_jsonl(root / "data" / "facts.jsonl", fmt="alpaca")
    return root


def adapter_folder(claims: Path, ftj: dict[str, Any]) -> Path:
    pvc = ftj["status"]["output"]["pvc"]
    return claims / pvc["claimName"] / pvc["path"]


def test_a_finetunejob_created_again_under_its_name_never_resumes_the_old_run(
    operator: RealOperatorControl, kube: KubeTestClient, kubelet: FakeKubelet, ns: str, tmp_path: Path, claims: Path
) -> None:
    job = naming.job_name("facts")
    kube.create(FTJ, ns, tiny_job(ns, {"maxSteps": 20, "saveSteps": 10}))
    first_uid = kube.get(FTJ, ns, "facts")["metadata"]["uid"]
    kube.wait_for(JOBS, ns, job, exists, TIMEOUT, "to be created")
    run = kubelet.run_job(ns, job, tmp_path / "first", claims_root=claims)
    assert run.returncode == 0, run.stderr[-3000:]
    first = wait_phase(kube, ns, "facts", "Succeeded", "Failed", timeout=TIMEOUT)
    assert first["status"]["output"]["pvc"] == {"claimName": "results", "path": f"facts/runs/{first_uid}/adapter"}
    old_run = claims / "results" / "facts" / "runs" / first_uid
    assert (old_run / runtime.CHECKPOINTS_DIR / "checkpoint-20").is_dir()

    # Delete it and create it again with another recipe whose max_steps the old checkpoints already reach: on a
    # shared folder the new run would "resume" at step 20, train nothing and publish the old weights as its own.
    delete(kube, FTJ, ns, "facts")
    kube.wait_for(FTJ, ns, "facts", gone, TIMEOUT, "to be deleted")
    kube.create(FTJ, ns, tiny_job(ns, {"maxSteps": 10, "saveSteps": 10, "learningRate": 3e-3}))
    second_uid = kube.get(FTJ, ns, "facts")["metadata"]["uid"]
    wait_until(
        lambda: (
            (found := kube.find(JOBS, ns, job)) is not None
            and found["metadata"]["ownerReferences"][0]["uid"] == second_uid
        ),
        "for the new FineTuneJob's trainer Job",
        TIMEOUT,
    )
    run = kubelet.run_job(ns, job, tmp_path / "second", claims_root=claims)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "resuming from" not in run.stderr
    second = wait_phase(kube, ns, "facts", "Succeeded", "Failed", timeout=TIMEOUT)
    assert second["status"]["phase"] == "Succeeded" and second["status"]["metrics"]["steps"] == 10
    new_adapter, old_adapter = adapter_folder(claims, second), old_run / runtime.ADAPTER_DIR
    assert new_adapter == claims / "results" / "facts" / "runs" / second_uid / runtime.ADAPTER_DIR
    new_manifest = json.loads((new_adapter / runtime.MANIFEST_FILE).read_text())
    old_manifest = json.loads((old_adapter / runtime.MANIFEST_FILE).read_text())
    assert new_manifest["steps"] == 10 and old_manifest["steps"] == 20
    assert new_manifest["specHash"] != old_manifest["specHash"]
    assert (new_adapter / "adapter_model.safetensors").read_bytes() != (
        old_adapter / "adapter_model.safetensors"
    ).read_bytes()


def _loss_lines(log: Path) -> int:
    """Optimizer steps the trainer has finished, as its per-step `{'loss': ...}` log lines tell."""
    try:
        return sum(line.startswith("{'loss'") for line in log.read_text().splitlines())
    except OSError:
        return 0


def test_sigterm_checkpoints_the_step_reached_and_the_jobs_next_pod_resumes_there(
    operator: RealOperatorControl, kube: KubeTestClient, kubelet: FakeKubelet, ns: str, tmp_path: Path, claims: Path
) -> None:
    job = naming.job_name("facts")
    training = {"maxSteps": 200, "saveSteps": 1000, "loggingSteps": 1}  # no periodic checkpoint at all
    kube.create(FTJ, ns, tiny_job(ns, training, backoffLimit=0))
    template = kube.wait_for(JOBS, ns, job, exists, TIMEOUT, "to be created")["spec"]["template"]["spec"]
    assert template["terminationGracePeriodSeconds"] == 120

    kubelet.start_job(ns, job)
    pod = kubelet.running_pod(ns, job)
    host = hostrun.prepare(kube, ns, pod, tmp_path / "preempted", claims, pod_name=pod["metadata"]["name"])
    log = tmp_path / "preempted.log"
    process = hostrun.start(host, {"PYTHONUNBUFFERED": "1"}, log)
    try:
        wait_until(lambda: _loss_lines(log) >= 20 or process.poll() is not None, "for 20 training steps", 300)
        reached = _loss_lines(log)
        process.send_signal(signal.SIGTERM)  # what the kubelet sends first when the node goes away
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert code == runtime.TrainerExit.PREEMPTED, log.read_text()[-3000:]
    message = host.termination_log.read_text()
    assert json.loads(message)["exitReason"] == "Preempted"
    kubelet.terminate_pod(pod, code, message)

    # The real Job controller ignores exit 69 (podFailurePolicy): no failure counted, even at backoffLimit 0.
    replacement = wait_until(
        lambda: [p for p in kubelet.pods_of(ns, job) if p["metadata"]["uid"] != pod["metadata"]["uid"]],
        "for the Job's replacement pod",
        TIMEOUT,
    )
    assert replacement
    status = kube.get(JOBS, ns, job).get("status") or {}
    assert not status.get("failed"), status
    # The FineTuneJob says why it waits again: the trainer's own words from the preempted pod.
    waiting = kube.wait_for(
        FTJ, ns, "facts", lambda f: (condition(f, "Running") or {}).get("reason") == "Preempted", TIMEOUT
    )
    assert waiting["status"]["phase"] == "Pending" and "stopped by SIGTERM at step" in waiting["status"]["message"]

    run_dir = claims / "results" / "facts" / "runs" / kube.get(FTJ, ns, "facts")["metadata"]["uid"]
    saved = sorted(run_dir.glob(f"{runtime.CHECKPOINTS_DIR}/checkpoint-*"))
    assert len(saved) == 1
    step = int(saved[0].name.split("-")[1])
    assert reached <= step < 200, f"steps finished before SIGTERM: {reached}; checkpoint at {step}"

    run = kubelet.run_job(ns, job, tmp_path / "resumed", claims_root=claims)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"resuming from {saved[0]}" in run.stderr
    done = wait_phase(kube, ns, "facts", "Succeeded", "Failed", timeout=TIMEOUT)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["metrics"]["steps"] == 200
    assert kube.get(PODS, ns, replacement[0]["metadata"]["name"])["status"]["phase"] == "Succeeded"
