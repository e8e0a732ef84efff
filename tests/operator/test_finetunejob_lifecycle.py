"""FineTuneJob scenarios: lifecycle, QLoRA, failures, deadline, suspend."""

from __future__ import annotations

import json

from kubetune.api import runtime

from tests.support.kube.server import CONFIGMAPS, EVENTS, FTJ, JOBS, PVCS, ROLEBINDINGS, ROLES, SERVICEACCOUNTS

from .helpers import NS, condition, exists, finetunejob, wait_phase


def test_full_lora_lifecycle(operator, kube, kubelet):
    kube.create(FTJ, NS, finetunejob())
    kube.wait_for(JOBS, NS, "sentiment-train", exists, what="to be created")
    ftj = wait_phase(kube, "sentiment", "Pending")
    assert ftj["status"]["jobName"] == "sentiment-train"
    assert condition(ftj, "JobCreated")["status"] == "True"

    kubelet.start_job(NS, "sentiment-train")
    ftj = wait_phase(kube, "sentiment", "Running")
    assert ftj["status"]["startTime"]

    metrics = {"trainLoss": 1.25, "evalLoss": 1.5, "perplexity": 4.48, "steps": 4}
    kube.patch(
        FTJ,
        NS,
        "sentiment",
        {"status": {"metrics": metrics, "progress": {"step": 4, "totalSteps": 4, "percent": 100}}},
        "status",
    )
    kubelet.finish_job(NS, "sentiment-train", 0, json.dumps({"reason": "Completed"}))
    ftj = wait_phase(kube, "sentiment", "Succeeded")
    status = ftj["status"]
    assert status["output"]["pvc"] == {"claimName": "sentiment-output", "path": runtime.ADAPTER_DIR}
    assert status["output"]["method"] == "lora"
    assert status["metrics"]["trainLoss"] == 1.25
    assert status["progress"]["percent"] == 100  # the trainer's progress is left alone
    assert status["completionTime"] and status["observedGeneration"] == 1
    assert condition(ftj, "Succeeded")["status"] == "True"

    owner_uid = ftj["metadata"]["uid"]
    for res, name in [
        (CONFIGMAPS, "sentiment-spec"),
        (PVCS, "sentiment-output"),
        (SERVICEACCOUNTS, "sentiment-trainer"),
        (ROLES, "sentiment-trainer"),
        (ROLEBINDINGS, "sentiment-trainer"),
        (JOBS, "sentiment-train"),
    ]:
        child = kube.get(res, NS, name)
        assert child["metadata"]["ownerReferences"][0]["uid"] == owner_uid, name
        assert child["metadata"]["labels"]["kubetune.dev/finetunejob"] == "sentiment"
        assert not any("argocd" in key for key in child["metadata"]["labels"])

    reasons = [e["reason"] for e in kube.list(EVENTS, NS) if e["involvedObject"]["name"] == "sentiment"]
    assert reasons == ["JobCreated", "Started", "Succeeded"]
    assert ftj["metadata"]["finalizers"] == ["kubetune.dev/finalizer"]
    assert any(key.startswith("kubetune.dev/") for key in ftj["metadata"]["annotations"])
