"""FineTuneJob scenarios: lifecycle, QLoRA, failures, deadline, suspend."""

from __future__ import annotations

import json

from kubetune.api import runtime

from tests.support.kube.server import CONFIGMAPS, FTJ, JOBS, PVCS, ROLEBINDINGS, ROLES, SERVICEACCOUNTS

from .helpers import NS, condition, exists, finetunejob, wait_event, wait_phase


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

    assert wait_event(kube, "sentiment", "Succeeded") == ["JobCreated", "Started", "Succeeded"]
    assert ftj["metadata"]["finalizers"] == ["kubetune.dev/finalizer"]
    assert any(key.startswith("kubetune.dev/") for key in ftj["metadata"]["annotations"])


def test_job_manifest_follows_the_runtime_contract(operator, kube):
    kube.create(FTJ, NS, finetunejob(dataset={"pvc": {"claimName": "data", "path": "facts.jsonl"}, "format": "qa"}))
    job = kube.wait_for(JOBS, NS, "sentiment-train", exists)
    spec = job["spec"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["python", "-m", "kubetune_trainer"]
    assert container["args"] == ["--spec", "/etc/kubetune/spec.json", "--output", "/mnt/kubetune/pvc/sentiment-output"]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == "sentiment-trainer"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/mnt/kubetune/pvc/sentiment-output"].get("readOnly") is None
    assert mounts["/mnt/kubetune/pvc/data"]["readOnly"] is True
    assert mounts["/etc/kubetune"]["readOnly"] is True and "/dev/shm" in mounts
    env = {e["name"]: e for e in container["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "token"}
    assert env["HF_HOME"]["value"].startswith("/mnt/kubetune/pvc/sentiment-output/")
    assert env["KUBETUNE_JOB_NAME"]["value"] == "sentiment" and env["KUBETUNE_NAMESPACE"]["value"] == NS
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob" and set(rules[0]["onExitCodes"]["values"]) == {64, 66}
    assert rules[1] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    stored = json.loads(kube.get(CONFIGMAPS, NS, "sentiment-spec")["data"]["spec.json"])
    assert stored["dataset"]["pvc"] == {"claimName": "data", "path": "facts.jsonl"}
    assert stored["lora"]["r"] == 16  # defaults are filled in: the trainer reads a complete spec


def test_qlora_job_requests_gpus_and_4bit_config(operator, kube):
    kube.create(
        FTJ,
        NS,
        finetunejob(
            method="qlora",
            quantization={"bits": 4, "type": "nf4"},
            resources={
                "gpus": 2,
                "gpuResourceName": "nvidia.com/gpu",
                "memory": "40Gi",
                "nodeSelector": {"nvidia.com/gpu.product": "A100"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "priorityClassName": "batch-low",
            },
        ),
    )
    job = kube.wait_for(JOBS, NS, "sentiment-train", exists)
    pod = job["spec"]["template"]["spec"]
    limits = pod["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "2" and limits["memory"] == "40Gi"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "A100"}
    assert pod["tolerations"][0]["operator"] == "Exists"
    assert pod["priorityClassName"] == "batch-low"
    stored = json.loads(kube.get(CONFIGMAPS, NS, "sentiment-spec")["data"]["spec.json"])
    assert stored["method"] == "qlora"
    assert stored["quantization"] == {"bits": 4, "type": "nf4", "doubleQuant": True, "computeDtype": "bfloat16"}


def test_trainer_failure_reports_the_termination_message(operator, kube, kubelet):
    kube.create(FTJ, NS, finetunejob(backoffLimit=0))
    kube.wait_for(JOBS, NS, "sentiment-train", exists)
    kubelet.start_job(NS, "sentiment-train")
    wait_phase(kube, "sentiment", "Running")
    summary = {"exitReason": "TrainerError", "exitCode": 1, "message": "dataset row 3 has no 'answer' column"}
    kubelet.finish_job(NS, "sentiment-train", 1, json.dumps(summary))
    ftj = wait_phase(kube, "sentiment", "Failed")
    assert "dataset row 3 has no 'answer' column" in ftj["status"]["message"]
    assert condition(ftj, "Failed")["reason"] == "BackoffLimitExceeded"


def test_out_of_memory_fails_at_once_through_the_pod_failure_policy(operator, kube, kubelet):
    kube.create(FTJ, NS, finetunejob(backoffLimit=3))
    kube.wait_for(JOBS, NS, "sentiment-train", exists)
    kubelet.start_job(NS, "sentiment-train")
    kubelet.finish_job(NS, "sentiment-train", int(runtime.TrainerExit.OUT_OF_MEMORY), "CUDA out of memory")
    ftj = wait_phase(kube, "sentiment", "Failed")
    assert condition(ftj, "Failed")["reason"] == "PodFailurePolicy"
    assert "OutOfMemory: CUDA out of memory" in ftj["status"]["message"]


def test_deadline_exceeded(operator, kube, kubelet):
    kube.create(FTJ, NS, finetunejob(activeDeadlineSeconds=60))
    job = kube.wait_for(JOBS, NS, "sentiment-train", exists)
    assert job["spec"]["activeDeadlineSeconds"] == 60
    kubelet.start_job(NS, "sentiment-train")
    wait_phase(kube, "sentiment", "Running")
    kubelet.exceed_deadline(NS, "sentiment-train")
    ftj = wait_phase(kube, "sentiment", "Failed")
    assert condition(ftj, "Failed")["reason"] == "DeadlineExceeded"
    assert "deadline" in ftj["status"]["message"]


def test_metrics_recovered_from_the_termination_message(operator, kube, kubelet):
    kube.create(FTJ, NS, finetunejob())
    kube.wait_for(JOBS, NS, "sentiment-train", exists)
    kubelet.start_job(NS, "sentiment-train")
    summary = {"exitReason": "Succeeded", "adapterPath": "/x/adapter", "metrics": {"trainLoss": 0.5, "evalLoss": 0.75}}
    kubelet.finish_job(NS, "sentiment-train", 0, json.dumps(summary))
    ftj = wait_phase(kube, "sentiment", "Succeeded")
    assert ftj["status"]["metrics"] == {"trainLoss": 0.5, "evalLoss": 0.75}


def test_suspend_and_resume(operator, kube, kubelet):
    kube.create(FTJ, NS, finetunejob())
    kube.wait_for(JOBS, NS, "sentiment-train", exists)
    kubelet.start_job(NS, "sentiment-train")
    wait_phase(kube, "sentiment", "Running")

    kube.patch(FTJ, NS, "sentiment", {"spec": {"suspend": True}})
    kube.wait_for(JOBS, NS, "sentiment-train", lambda job: job["spec"]["suspend"] is True, what="to be suspended")
    kubelet.sync_suspend(NS, "sentiment-train")
    ftj = wait_phase(kube, "sentiment", "Suspended")
    assert condition(ftj, "Suspended")["status"] == "True"
    assert kubelet.pods_of(NS, "sentiment-train") == []

    kube.patch(FTJ, NS, "sentiment", {"spec": {"suspend": False}})
    kube.wait_for(JOBS, NS, "sentiment-train", lambda job: job["spec"]["suspend"] is False, what="to resume")
    kubelet.sync_suspend(NS, "sentiment-train")
    kubelet.start_job(NS, "sentiment-train")
    ftj = wait_phase(kube, "sentiment", "Running")
    assert condition(ftj, "Suspended")["status"] == "False"
    assert "Suspended" in wait_event(kube, "sentiment", "Resumed")


def test_created_suspended_never_starts(operator, kube):
    kube.create(FTJ, NS, finetunejob(suspend=True))
    job = kube.wait_for(JOBS, NS, "sentiment-train", exists)
    assert job["spec"]["suspend"] is True
    wait_phase(kube, "sentiment", "Suspended")


def test_invalid_object_fails_with_invalid_spec(operator, kube, cluster):
    bad = finetunejob()
    bad["spec"]["method"] = "qlora"  # without quantization: the CRD's CEL rule would refuse it
    bad["spec"]["training"]["learningRate"] = 5
    kube.create(FTJ, NS, bad)
    ftj = wait_phase(kube, "sentiment", "Failed")
    validated = condition(ftj, "Validated")
    assert validated["status"] == "False" and validated["reason"] == "InvalidSpec"
    assert "spec.training.learningRate" in ftj["status"]["message"]
    assert kube.find(JOBS, NS, "sentiment-train") is None
    assert kube.find(CONFIGMAPS, NS, "sentiment-spec") is None
    reconciles = [c for c in cluster.recorder.of() if c.resource == "finetunejobs" and c.subresource == "status"]
    assert len(reconciles) == 1  # no retries


def test_trainer_role_names_only_its_own_finetunejob(operator, kube):
    kube.create(FTJ, NS, finetunejob("alpha"))
    kube.create(FTJ, NS, finetunejob("beta"))
    for name in ("alpha", "beta"):
        role = kube.wait_for(ROLES, NS, f"{name}-trainer", exists)
        assert role["rules"], name
        for rule in role["rules"]:
            assert rule["resourceNames"] == [name]
            assert rule["apiGroups"] == ["kubetune.dev"]
            assert set(rule["verbs"]) <= {"get", "patch"}
        assert {r for rule in role["rules"] for r in rule["resources"]} == {"finetunejobs", "finetunejobs/status"}
        binding = kube.wait_for(ROLEBINDINGS, NS, f"{name}-trainer", exists)
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"{name}-trainer", "namespace": NS}]
        assert binding["roleRef"]["name"] == f"{name}-trainer"


def test_existing_output_claim_is_used_and_not_created(operator, kube):
    kube.create(FTJ, NS, finetunejob(output={"pvc": {"claimName": "shared", "path": "runs/a"}}))
    job = kube.wait_for(JOBS, NS, "sentiment-train", exists)
    assert job["spec"]["template"]["spec"]["containers"][0]["args"][-1] == "/mnt/kubetune/pvc/shared/runs/a"
    assert kube.find(PVCS, NS, "sentiment-output") is None


def test_kept_output_claim_has_no_owner(operator, kube):
    kube.create(FTJ, NS, finetunejob(output={"keep": True, "storageSize": "20Gi"}))
    claim = kube.wait_for(PVCS, NS, "sentiment-output", exists)
    assert "ownerReferences" not in claim["metadata"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
