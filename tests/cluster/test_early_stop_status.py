"""Why training stopped reaches the FineTuneJob (real control plane): the trainer reports stopReason, stopMessage,
bestStep and publishedStep in its ConfigMap with its own token, the API server stores them in .status.metrics (the
CRD's status schema keeps them, not prunes them), and the Succeeded condition says which step won and why."""

from __future__ import annotations

from tests.support.kube.server import FTJ, JOBS

from .helpers import condition, exists, finetunejob, trainer_report_client, wait_phase

STOP_MESSAGE = (
    "eval loss did not improve for 2 evaluations after step 50 (best eval loss 2.4384 at step 50); stopped at step "
    "60 of 100 planned"
)


def test_the_stop_reason_and_the_winning_step_are_stored(control_plane, operator, kube, kubelet, ns, tmp_path):
    training = {"maxSteps": 100, "evalSteps": 5, "saveSteps": 5, "earlyStopping": {"patience": 2}}
    kube.create(FTJ, ns, finetunejob(ns, training=training))
    kube.wait_for(JOBS, ns, "sentiment-train", exists)
    kubelet.start_job(ns, "sentiment-train")
    wait_phase(kube, ns, "sentiment", "Running")
    trainer = trainer_report_client(control_plane, ns, "sentiment", tmp_path)

    metrics = {
        "evalLoss": 2.4384,
        "steps": 60,
        "publishedStep": 50,
        "bestStep": 50,
        "stopReason": "EarlyStopped",
        "stopMessage": STOP_MESSAGE,
    }
    assert trainer.patch_status({"progress": {"step": 60, "totalSteps": 100, "percent": 60}, "metrics": metrics})
    stored = kube.wait_for(FTJ, ns, "sentiment", lambda ftj: (ftj or {}).get("status", {}).get("metrics") == metrics)
    assert stored["status"]["metrics"]["stopReason"] == "EarlyStopped"

    kubelet.finish_job(ns, "sentiment-train", exit_code=0)
    done = wait_phase(kube, ns, "sentiment", "Succeeded")
    assert done["status"]["metrics"] == metrics
    succeeded = condition(done, "Succeeded")
    assert succeeded is not None
    assert f"stopped early, published step 50: {STOP_MESSAGE}" in succeeded["message"]
    assert done["status"]["message"] == succeeded["message"]
