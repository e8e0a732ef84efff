"""FineTuneJob scenarios on the real control plane: lifecycle, the Job manifest, QLoRA, failures decided by the
real Job controller (backoffLimit, podFailurePolicy, activeDeadlineSeconds), suspend, and what the API server's
CRD validation refuses versus what only the operator's models catch."""

from __future__ import annotations

import json

import pytest
from kubetune.api import runtime

from tests.support.kube.server import CONFIGMAPS, FTJ, JOBS, PODS, PVCS, ROLEBINDINGS, ROLES, KubeError

from .helpers import (
    SENTIMENT_CHILDREN,
    condition,
    event_reasons,
    exists,
    finetunejob,
    operator_requests,
    wait_event,
    wait_phase,
    wait_until,
)

JOB_NAME_LABEL = "batch.kubernetes.io/job-name=sentiment-train"
HANDLED = "kubetune.dev/last-handled-configuration"


def _job_condition(job: dict | None, type_: str) -> bool:
    return job is not None and any(
        c["type"] == type_ and c["status"] == "True" for c in (job.get("status") or {}).get("conditions") or []
    )


def _handled(ftj: dict | None) -> bool:
    return ftj is not None and HANDLED in (ftj["metadata"].get("annotations") or {})


def _pending_pod_counted(kube, ns: str):
    """The Job controller created the trainer pod and counts it in status.active while it is still Pending."""

    def check(job: dict | None) -> bool:
        pods = kube.list(PODS, ns, JOB_NAME_LABEL)
        pending = [p for p in pods if (p.get("status") or {}).get("phase") == "Pending"]
        return job is not None and (job.get("status") or {}).get("active", 0) >= 1 and len(pending) == 1

    return check


def test_full_lora_lifecycle(operator, kube, kubelet, ns):
    kube.create(FTJ, ns, finetunejob(ns))
    kube.wait_for(JOBS, ns, "sentiment-train", _pending_pod_counted(kube, ns), what="to count a pending pod")
    ftj = wait_phase(kube, ns, "sentiment", "Pending")  # a pending pod (no node, no GPU yet) is not training
    assert ftj["status"]["jobName"] == "sentiment-train"
    assert condition(ftj, "JobCreated")["status"] == "True"

    kubelet.start_job(ns, "sentiment-train")
    ftj = wait_phase(kube, ns, "sentiment", "Running")
    assert ftj["status"]["startTime"]

    metrics = {"trainLoss": 1.25, "evalLoss": 1.5, "perplexity": 4.48, "steps": 4}
    progress = {"step": 4, "totalSteps": 4, "percent": 100}
    kube.patch(FTJ, ns, "sentiment", {"status": {"metrics": metrics, "progress": progress}}, "status")
    kubelet.finish_job(ns, "sentiment-train", 0, json.dumps({"reason": "Completed"}))
    ftj = wait_phase(kube, ns, "sentiment", "Succeeded")
    status = ftj["status"]
    run = f"{runtime.RUNS_DIR}/{ftj['metadata']['uid']}"
    assert status["output"]["pvc"] == {"claimName": "sentiment-output", "path": f"{run}/{runtime.ADAPTER_DIR}"}
    assert status["output"]["method"] == "lora"
    assert status["metrics"]["trainLoss"] == 1.25
    assert status["progress"]["percent"] == 100  # the trainer's progress is left alone
    assert status["completionTime"] and status["observedGeneration"] == 1
    assert condition(ftj, "Succeeded")["status"] == "True"
    assert _job_condition(kube.get(JOBS, ns, "sentiment-train"), "Complete")  # the real Job controller's verdict

    owner_uid = ftj["metadata"]["uid"]
    for res, name in SENTIMENT_CHILDREN:
        child = kube.get(res, ns, name)
        assert child["metadata"]["ownerReferences"][0]["uid"] == owner_uid, name
        assert child["metadata"]["labels"]["kubetune.dev/finetunejob"] == "sentiment"
        assert not any("argocd" in key for key in child["metadata"]["labels"])

    assert wait_event(kube, ns, "sentiment", "Succeeded") == ["JobCreated", "Started", "Succeeded"]
    assert not ftj["metadata"].get("finalizers")  # owner references suffice (tests/cluster/test_finalizers.py)
    assert any(key.startswith("kubetune.dev/") for key in ftj["metadata"]["annotations"])


def test_job_manifest_follows_the_runtime_contract(operator, kube, ns):
    kube.create(FTJ, ns, finetunejob(ns, dataset={"pvc": {"claimName": "data", "path": "facts.jsonl"}, "format": "qa"}))
    job = kube.wait_for(JOBS, ns, "sentiment-train", exists)
    spec = job["spec"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["python", "-m", "kubetune_trainer"]
    uid = kube.get(FTJ, ns, "sentiment")["metadata"]["uid"]  # each run writes under its own folder
    output = f"/mnt/kubetune/pvc/sentiment-output/runs/{uid}"
    assert container["args"] == ["--spec", "/etc/kubetune/spec.json", "--output", output]
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
    # The Hub model downloads into a size-limited scratch volume (no model cache configured), not the output claim.
    assert env["HF_HOME"]["value"] == "/var/cache/kubetune/huggingface" and "/var/cache/kubetune" in mounts
    scratch = next(v for v in pod["volumes"] if v["name"] == "scratch")
    assert scratch["emptyDir"]["sizeLimit"] == container["resources"]["requests"]["ephemeral-storage"] == "50Gi"
    assert env["KUBETUNE_JOB_NAME"]["value"] == "sentiment" and env["KUBETUNE_NAMESPACE"]["value"] == ns
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob" and set(rules[0]["onExitCodes"]["values"]) == {64, 66}
    assert rules[1] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    stored = json.loads(kube.get(CONFIGMAPS, ns, "sentiment-spec")["data"]["spec.json"])
    assert stored["dataset"]["pvc"] == {"claimName": "data", "path": "facts.jsonl"}
    assert stored["lora"]["r"] == 16  # defaults are filled in: the trainer reads a complete spec
    # The pod the real Job controller made from it passed PodSecurity "restricted" admission.
    wait_until(lambda: kube.list(PODS, ns, JOB_NAME_LABEL), "for the Job controller to create the trainer pod")
    assert "FailedCreate" not in event_reasons(kube, ns, "sentiment-train")


def test_qlora_job_requests_gpus_and_4bit_config(operator, kube, ns):
    kube.create(
        FTJ,
        ns,
        finetunejob(
            ns,
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
    job = kube.wait_for(JOBS, ns, "sentiment-train", exists)
    pod = job["spec"]["template"]["spec"]
    limits = pod["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "2" and limits["memory"] == "40Gi"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "A100"}
    assert pod["tolerations"][0]["operator"] == "Exists"
    assert pod["priorityClassName"] == "batch-low"
    stored = json.loads(kube.get(CONFIGMAPS, ns, "sentiment-spec")["data"]["spec.json"])
    assert stored["method"] == "qlora"
    assert stored["quantization"] == {"bits": 4, "type": "nf4", "doubleQuant": True, "computeDtype": "bfloat16"}


def test_trainer_failure_reports_the_termination_message(operator, kube, kubelet, ns):
    kube.create(FTJ, ns, finetunejob(ns, backoffLimit=0))
    kube.wait_for(JOBS, ns, "sentiment-train", exists)
    kubelet.start_job(ns, "sentiment-train")
    wait_phase(kube, ns, "sentiment", "Running")
    summary = {"exitReason": "TrainerError", "exitCode": 1, "message": "dataset row 3 has no 'answer' column"}
    kubelet.finish_job(ns, "sentiment-train", 1, json.dumps(summary))
    ftj = wait_phase(kube, ns, "sentiment", "Failed")
    assert "dataset row 3 has no 'answer' column" in ftj["status"]["message"]
    assert condition(ftj, "Failed")["reason"] == "BackoffLimitExceeded"  # decided by the real Job controller
    assert _job_condition(kube.get(JOBS, ns, "sentiment-train"), "Failed")


def test_out_of_memory_fails_at_once_through_the_pod_failure_policy(operator, kube, kubelet, ns):
    kube.create(FTJ, ns, finetunejob(ns, backoffLimit=3))
    kube.wait_for(JOBS, ns, "sentiment-train", exists)
    kubelet.start_job(ns, "sentiment-train")
    kubelet.finish_job(ns, "sentiment-train", int(runtime.TrainerExit.OUT_OF_MEMORY), "CUDA out of memory")
    ftj = wait_phase(kube, ns, "sentiment", "Failed")
    assert condition(ftj, "Failed")["reason"] == "PodFailurePolicy"
    assert "OutOfMemory: CUDA out of memory" in ftj["status"]["message"]
    assert len(kube.list(PODS, ns, JOB_NAME_LABEL)) == 1  # FailJob: no retry despite backoffLimit 3


def test_deadline_exceeded(operator, kube, kubelet, ns):
    kube.create(FTJ, ns, finetunejob(ns, activeDeadlineSeconds=3))
    job = kube.wait_for(JOBS, ns, "sentiment-train", exists)
    assert job["spec"]["activeDeadlineSeconds"] == 3
    kubelet.start_job(ns, "sentiment-train")
    # The real Job controller ends the running trainer when the deadline passes.
    ftj = wait_phase(kube, ns, "sentiment", "Failed")
    assert condition(ftj, "Failed")["reason"] == "DeadlineExceeded"
    assert "deadline" in ftj["status"]["message"]
    wait_until(lambda: kubelet.pods_of(ns, "sentiment-train") == [], "for the Job controller to stop the trainer")


def test_metrics_recovered_from_the_termination_message(operator, kube, kubelet, ns):
    kube.create(FTJ, ns, finetunejob(ns))
    kube.wait_for(JOBS, ns, "sentiment-train", exists)
    kubelet.start_job(ns, "sentiment-train")
    summary = {"exitReason": "Succeeded", "adapterPath": "/x/adapter", "metrics": {"trainLoss": 0.5, "evalLoss": 0.75}}
    kubelet.finish_job(ns, "sentiment-train", 0, json.dumps(summary))
    ftj = wait_phase(kube, ns, "sentiment", "Succeeded")
    assert ftj["status"]["metrics"] == {"trainLoss": 0.5, "evalLoss": 0.75}


def test_suspend_and_resume(operator, kube, kubelet, ns):
    kube.create(FTJ, ns, finetunejob(ns))
    kube.wait_for(JOBS, ns, "sentiment-train", exists)
    first = kubelet.pods_of(ns, "sentiment-train")
    kubelet.start_job(ns, "sentiment-train")
    wait_phase(kube, ns, "sentiment", "Running")

    kube.patch(FTJ, ns, "sentiment", {"spec": {"suspend": True}})
    # The real Job controller deletes the trainer pod and reports the Job Suspended.
    kube.wait_for(JOBS, ns, "sentiment-train", lambda job: _job_condition(job, "Suspended"), what="to be suspended")
    wait_until(lambda: kube.list(PODS, ns, JOB_NAME_LABEL) == [], "for the trainer pod to be deleted")
    ftj = wait_phase(kube, ns, "sentiment", "Suspended")
    assert condition(ftj, "Suspended")["status"] == "True"

    kube.patch(FTJ, ns, "sentiment", {"spec": {"suspend": False}})
    kube.wait_for(JOBS, ns, "sentiment-train", lambda job: not _job_condition(job, "Suspended"), what="to resume")
    kubelet.start_job(ns, "sentiment-train")  # a new pod, created by the Job controller on resume
    assert [p["metadata"]["uid"] for p in kubelet.pods_of(ns, "sentiment-train")] != [
        p["metadata"]["uid"] for p in first
    ]
    ftj = wait_phase(kube, ns, "sentiment", "Running")
    assert condition(ftj, "Suspended")["status"] == "False"
    assert "Suspended" in wait_event(kube, ns, "sentiment", "Resumed")


def test_created_suspended_never_starts(operator, kube, ns):
    kube.create(FTJ, ns, finetunejob(ns, suspend=True))
    job = kube.wait_for(JOBS, ns, "sentiment-train", lambda j: _job_condition(j, "Suspended"), what="suspended")
    assert job["spec"]["suspend"] is True
    wait_phase(kube, ns, "sentiment", "Suspended")
    assert kube.list(PODS, ns, JOB_NAME_LABEL) == []


def test_crd_refuses_qlora_without_quantization(operator, kube, ns):
    bad = finetunejob(ns, method="qlora")
    bad["spec"]["training"]["learningRate"] = 5
    with pytest.raises(KubeError) as refused:
        kube.create(FTJ, ns, bad)
    assert refused.value.code == 422
    message = str(refused.value)
    assert "spec.training.learningRate" in message  # the schema's exclusiveMaximum
    assert "quantization is required with method qlora" in message  # the spec's CEL rule
    assert kube.find(FTJ, ns, "sentiment") is None


def test_object_past_the_crd_that_the_model_refuses_fails_with_invalid_spec(operator, control_plane, kube, ns):
    """packing and paddingFree together pass the CRD (no CEL rule for it) but not the operator's model."""
    since = control_plane.audit.offset()
    kube.create(FTJ, ns, finetunejob(ns, training={"epochs": 1, "packing": True, "paddingFree": True}))
    ftj = wait_phase(kube, ns, "sentiment", "Failed")
    validated = condition(ftj, "Validated")
    assert validated["status"] == "False" and validated["reason"] == "InvalidSpec"
    assert "packing and paddingFree are alternatives" in ftj["status"]["message"]
    assert "InvalidSpec" in wait_event(kube, ns, "sentiment", "InvalidSpec")
    # kopf writes the handled configuration once the create handler is done for good (nothing left to retry).
    kube.wait_for(FTJ, ns, "sentiment", _handled, what="to be handled by kopf")
    assert kube.find(JOBS, ns, "sentiment-train") is None
    assert kube.find(CONFIGMAPS, ns, "sentiment-spec") is None
    assert len(operator_requests(control_plane, since, "patch", "finetunejobs", "status")) == 1  # no retries
    assert operator_requests(control_plane, since, "create", "jobs") == []


def test_trainer_role_names_only_its_own_report_configmap(operator, kube, ns):
    kube.create(FTJ, ns, finetunejob(ns, "alpha"))
    kube.create(FTJ, ns, finetunejob(ns, "beta"))
    for name in ("alpha", "beta"):
        role = kube.wait_for(ROLES, ns, f"{name}-trainer", exists)
        assert role["rules"], name
        for rule in role["rules"]:
            assert rule["resourceNames"] == [f"{name}-report"]
            assert rule["apiGroups"] == [""]
            assert set(rule["verbs"]) <= {"get", "patch"}
        assert {r for rule in role["rules"] for r in rule["resources"]} == {"configmaps"}
        binding = kube.wait_for(ROLEBINDINGS, ns, f"{name}-trainer", exists)
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"{name}-trainer", "namespace": ns}]
        assert binding["roleRef"]["name"] == f"{name}-trainer"


def test_existing_output_claim_is_used_and_not_created(operator, kube, ns):
    kube.create(FTJ, ns, finetunejob(ns, output={"pvc": {"claimName": "shared", "path": "runs/a"}}))
    job = kube.wait_for(JOBS, ns, "sentiment-train", exists)
    uid = kube.get(FTJ, ns, "sentiment")["metadata"]["uid"]
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-1] == f"/mnt/kubetune/pvc/shared/runs/a/runs/{uid}"  # the run's own folder under the given path
    assert kube.find(PVCS, ns, "sentiment-output") is None


def test_kept_output_claim_has_no_owner(operator, kube, ns):
    kube.create(FTJ, ns, finetunejob(ns, output={"keep": True, "storageSize": "20Gi"}))
    claim = kube.wait_for(PVCS, ns, "sentiment-output", exists)
    assert "ownerReferences" not in claim["metadata"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
