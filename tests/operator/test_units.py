"""Unit tests of the operator's pure parts: settings, names, manifest builders, reconcile decisions."""

from __future__ import annotations

import json

import pytest
from kubetune.api.conditions import Condition
from kubetune.api.finetunejob import FineTuneJobSpec, FineTuneJobStatus
from kubetune.api.modelserve import ModelServeStatus, ResolvedAdapter
from kubetune.api.resources import FineTuneJob, ModelServe
from kubetune.api.runtime import TrainerExit
from kubetune.api.serving import ReplicaAdapter
from kubetune.api.sources import PvcPath, SecretKeyRef, Toleration
from kubetune.operator import naming, server_adapters, services
from kubetune.operator.manifests import pod
from kubetune.operator.manifests.meta import Owner, labels
from kubetune.operator.manifests.server import restart_hash
from kubetune.operator.manifests.trainer import output_location, pod_failure_policy, trainer_children
from kubetune.operator.metrics import OperatorMetrics
from kubetune.operator.reconcile import drift
from kubetune.operator.reconcile import finetunejob as ftj_logic
from kubetune.operator.reconcile import modelserve as msv_logic
from kubetune.operator.reconcile.conditions import set_condition
from kubetune.operator.reconcile.drift import contains, drifted, repair_patch
from kubetune.operator.reconcile.report import parse_termination_message, report_from_pods
from kubetune.operator.reconcile.served_adapters import ReplicaReport, loaded_condition, needs_recheck, served_adapters
from kubetune.operator.settings import OperatorSettings, SettingsError

from tests.cluster.helpers import finetunejob, modelserve

SETTINGS = OperatorSettings(trainer_image="t:1", server_image="s:1", trainer_cpu="2")
NOW = "2026-01-01T00:00:00Z"


def _ftj(**spec) -> FineTuneJob:
    body = finetunejob("default", **spec)
    body["metadata"].update(uid="uid-1", generation=1)
    return FineTuneJob.model_validate(body)


# ---- settings ----------------------------------------------------------------------------------
def test_settings_from_env():
    settings = OperatorSettings.from_env(
        {
            "KUBETUNE_TRAINER_IMAGE": "reg/trainer:2",
            "KUBETUNE_WATCH_NAMESPACES": "ml, research",
            "KUBETUNE_METRICS_PORT": "9100",
            "KUBETUNE_TRAINER_MEMORY": "32Gi",
            "KUBECONFIG": "/tmp/kc",
            "KUBETUNE_UNRELATED": "x",
        }
    )
    assert settings.trainer_image == "reg/trainer:2" and settings.watch_namespaces == ("ml", "research")
    assert settings.metrics_port == 9100 and settings.trainer_memory == "32Gi" and settings.kubeconfig == "/tmp/kc"
    assert OperatorSettings.from_env({}).server_image.startswith("ghcr.io/")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"KUBETUNE_METRICS_PORT": "lots"}, "KUBETUNE_METRICS_PORT='lots'"),
        ({"KUBETUNE_TRAINER_CPU": "four"}, "KUBETUNE_TRAINER_CPU='four'"),
        ({"KUBETUNE_IMAGE_PULL_POLICY": "Sometimes"}, "KUBETUNE_IMAGE_PULL_POLICY"),
    ],
)
def test_settings_errors_name_the_variable(env, named):
    with pytest.raises(SettingsError, match=named):
        OperatorSettings.from_env(env)


# ---- names and labels --------------------------------------------------------------------------
def test_names_fit_kubernetes_limits_and_stay_stable():
    long = "a" * 200
    assert len(naming.job_name(long)) <= 63 and naming.job_name(long) == naming.job_name(long)
    assert naming.job_name(long) != naming.job_name("a" * 199)
    assert naming.server_name("chat") == "chat"
    assert naming.server_name("1st.model") == "msv-1st-model"  # Service names are DNS-1035 labels
    assert len(labels("trainer", long, naming.LABEL_FINETUNEJOB)[naming.LABEL_INSTANCE]) <= 63


# ---- manifest pieces ---------------------------------------------------------------------------
def test_security_contexts_are_restricted():
    assert pod.pod_security_context()["runAsNonRoot"] is True
    assert pod.pod_security_context()["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod.container_security_context()
    assert container["allowPrivilegeEscalation"] is False and container["capabilities"] == {"drop": ["ALL"]}


def test_resources_requests_equal_limits_and_gpus_are_limits():
    assert pod.resources("4", None, 2, "amd.com/gpu", default_memory="8Gi") == {
        "requests": {"cpu": "4", "memory": "8Gi"},
        "limits": {"cpu": "4", "memory": "8Gi", "amd.com/gpu": "2"},
    }
    assert pod.resources(None, None, 0, "nvidia.com/gpu") == {}


def test_env_from_secret_never_carries_the_value():
    assert pod.env_secret("HF_TOKEN", SecretKeyRef(name="hf", key="tok")) == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf", "key": "tok"}},
    }


def test_scheduling_only_sets_what_is_given():
    tolerations = [Toleration(key="gpu", operator="Exists")]
    assert pod.scheduling({}, [], None) == {}
    assert pod.scheduling({"a": "b"}, tolerations, "low") == {
        "nodeSelector": {"a": "b"},
        "tolerations": [{"key": "gpu", "operator": "Exists"}],
        "priorityClassName": "low",
    }


def test_volumes_mount_each_claim_once_and_writable_wins():
    volumes = pod.Volumes()
    volumes.add_claim("in", "shared", "/mnt/kubetune/pvc/shared", read_only=True)
    volumes.add_claim("out", "shared", "/mnt/kubetune/pvc/shared", read_only=False)
    assert len(volumes.volumes) == 1 and "readOnly" not in volumes.mounts[0]
    assert "readOnly" not in volumes.volumes[0]["persistentVolumeClaim"]


def test_owner_reference_is_a_controller_reference():
    owner = Owner("kubetune.dev/v1alpha1", "FineTuneJob", "x", "ns", "u")
    assert owner.reference() == {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "name": "x",
        "uid": "u",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_pod_failure_policy_keys_on_trainer_exit_codes():
    rules = pod_failure_policy()["rules"]
    assert rules[0]["onExitCodes"]["values"] == [TrainerExit.INVALID_INPUT, TrainerExit.OUT_OF_MEMORY]
    assert rules[1]["action"] == "Ignore"
    assert rules[2] == {
        "action": "Ignore",
        "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [TrainerExit.PREEMPTED]},
    }


def test_children_order_and_configmap_dataset_mount():
    ftj = _ftj()
    kinds = [c["kind"] for c in trainer_children(ftj_logic.owner_of(ftj), ftj.spec, SETTINGS)]
    assert kinds == ["ConfigMap", "PersistentVolumeClaim", "ConfigMap", "ServiceAccount", "Role", "RoleBinding", "Job"]
    job = trainer_children(ftj_logic.owner_of(ftj), ftj.spec, SETTINGS)[-1]
    mounts = {m["mountPath"] for m in job["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert "/mnt/kubetune/configmap/facts" in mounts
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "t:1"
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "4"


def test_output_location():
    spec = FineTuneJobSpec.model_validate(
        finetunejob("default", output={"pvc": {"claimName": "c", "path": "p"}})["spec"]
    )
    assert output_location("x", spec).claim_name == "c" and output_location("x", spec).path == "p"
    assert output_location("x", _ftj().spec).claim_name == "x-output"


# ---- reconcile decisions -----------------------------------------------------------------------
def _job(**status) -> dict:
    return {
        "metadata": {"name": "sentiment-train", "namespace": "default"},
        "spec": {"suspend": False},
        "status": status,
    }


def _cond(type_, reason="r"):
    return {"type": type_, "status": "True", "reason": reason, "message": f"{type_} happened"}


def test_job_phase():
    assert ftj_logic.job_phase(None) is None
    assert ftj_logic.job_phase(_job()) == "Pending"
    assert ftj_logic.job_phase(_job(active=1)) == "Running"  # a server that does not report `ready`
    assert ftj_logic.job_phase(_job(active=1, ready=0)) == "Pending"  # `active` counts unscheduled pods too
    assert ftj_logic.job_phase(_job(active=1, ready=1)) == "Running"
    assert ftj_logic.job_phase(_job(conditions=[_cond("Complete")])) == "Succeeded"
    assert ftj_logic.job_phase(_job(conditions=[_cond("FailureTarget")])) == "Failed"
    assert ftj_logic.job_phase({**_job(), "spec": {"suspend": True}}) == "Suspended"


def test_new_finetunejob_creates_children_and_an_event():
    plan = ftj_logic.plan_finetunejob(_ftj(), None, None, SETTINGS, NOW)
    assert plan.create[-1]["kind"] == "Job" and plan.phase == "Pending"
    assert plan.status["jobName"] == "sentiment-train" and plan.status["observedGeneration"] == 1
    assert [e.reason for e in plan.events] == ["JobCreated"]


def test_finished_finetunejob_is_never_touched():
    ftj = _ftj().model_copy(update={"status": FineTuneJobStatus(phase="Succeeded", job_name="sentiment-train")})
    plan = ftj_logic.plan_finetunejob(ftj, None, None, SETTINGS, NOW)
    assert plan.create == [] and plan.status == {} and plan.events == []


def test_unchanged_state_writes_nothing():
    ftj = _ftj()
    first = ftj_logic.plan_finetunejob(ftj, _job(active=1), None, SETTINGS, NOW)
    status = FineTuneJobStatus.model_validate(first.status | {"conditions": first.status["conditions"]})
    again = ftj_logic.plan_finetunejob(
        ftj.model_copy(update={"status": status}), _job(active=1), None, SETTINGS, "2026-01-02T00:00:00Z"
    )
    assert again.status == {} and again.events == [] and again.patches == []


def test_a_vanished_job_whose_trainer_reported_final_metrics_is_not_rerun():
    status = FineTuneJobStatus(phase="Running", job_name="sentiment-train", metrics={"trainLoss": 0.5})
    plan = ftj_logic.plan_finetunejob(_ftj().model_copy(update={"status": status}), None, None, SETTINGS, NOW)
    assert plan.create == [] and plan.phase == "Succeeded"
    assert plan.status["output"]["pvc"] == {"claimName": "sentiment-output", "path": "runs/uid-1/adapter"}
    running = FineTuneJobStatus(phase="Running", job_name="sentiment-train")
    again = ftj_logic.plan_finetunejob(_ftj().model_copy(update={"status": running}), None, None, SETTINGS, NOW)
    assert again.create and [e.reason for e in again.events] == ["JobRecreated"]


def test_suspend_is_passed_to_the_job():
    plan = ftj_logic.plan_finetunejob(_ftj(suspend=True), _job(active=1), None, SETTINGS, NOW)
    assert plan.patches[0][1] == {"spec": {"suspend": True}} and plan.phase == "Suspended"


def test_failure_combines_job_reason_and_trainer_message():
    report = parse_termination_message(json.dumps({"message": "no GPU memory"}), 66)
    job = _job(conditions=[_cond("Failed", "PodFailurePolicy")])
    plan = ftj_logic.plan_finetunejob(_ftj(), job, report, SETTINGS, NOW)
    assert plan.phase == "Failed"
    assert plan.status["message"] == "Failed happened; trainer: OutOfMemory: no GPU memory"
    assert plan.events[0].type == "Warning"


def test_needs_report_only_when_something_is_missing():
    done = _job(conditions=[_cond("Complete")])
    assert ftj_logic.needs_report(FineTuneJobStatus(phase="Running"), done)
    assert not ftj_logic.needs_report(FineTuneJobStatus(phase="Running", metrics={"trainLoss": 1}), done)
    assert not ftj_logic.needs_report(FineTuneJobStatus(phase="Running"), _job(active=1))


def test_conditions_keep_transition_time_when_unchanged():
    first = set_condition([], "Ready", "True", "A", "m", 1, NOW)
    second = set_condition(first, "Ready", "True", "B", "m2", 2, "later")
    third = set_condition(second, "Ready", "False", "C", "m3", 2, "latest")
    assert second[0].last_transition_time == NOW and second[0].reason == "B"
    assert third[0].last_transition_time == "latest"
    assert isinstance(third[0], Condition)


def test_termination_message_parsing():
    report = parse_termination_message('{"exitReason": "InvalidInput", "exitCode": 64, "message": "bad"}', 64)
    assert report.exit_reason == "InvalidInput" and report.message == "bad"
    report = parse_termination_message('{"reason": "InvalidInput", "message": "bad", "metrics": {"trainLoss": 2}}', 64)
    assert report.exit_reason == "InvalidInput" and report.metrics.train_loss == 2
    log_tail = parse_termination_message("Traceback ...\nKeyError: 'x'", 1)
    assert log_tail.exit_reason == "TrainerError" and log_tail.message.endswith("KeyError: 'x'")
    pods = [
        {
            "status": {
                "containerStatuses": [
                    {"name": "trainer", "state": {"terminated": {"exitCode": code, "message": msg, "finishedAt": at}}}
                ]
            }
        }
        for code, msg, at in [(1, "first", "2026-01-01T00:00:01Z"), (65, "second", "2026-01-01T00:00:02Z")]
    ]
    assert report_from_pods(pods, "trainer").message == "second"


def test_drift_ignores_server_defaults_but_not_edits():
    desired = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s", "labels": {"a": "b"}},
        "spec": {"ports": [{"port": 80}]},
    }
    observed = {
        "metadata": {"name": "s", "labels": {"a": "b"}, "uid": "u"},
        "spec": {"ports": [{"port": 80, "protocol": "TCP"}], "clusterIP": "10.0.0.1"},
    }
    assert not drifted(observed, desired)
    observed["spec"]["ports"][0]["port"] = 81
    assert drifted(observed, desired)
    assert repair_patch(desired) == {"metadata": {"labels": {"a": "b"}}, "spec": {"ports": [{"port": 80}]}}
    assert contains({"replicas": 1}, {"replicas": "1"}) and not contains({"x": True}, {"x": 1})


def test_drift_compares_quantities_by_value():
    """The API server stores `0.5` as `500m` and `2048Mi` as `2Gi`: not drift. Only quantity fields are read so."""
    desired = {
        "resources": {"limits": {"cpu": "0.5", "memory": "2048Mi"}},
        "volumes": [{"emptyDir": {"sizeLimit": "1Gi"}}],
    }
    stored = {
        "resources": {"limits": {"cpu": "500m", "memory": "2Gi"}},
        "volumes": [{"emptyDir": {"sizeLimit": "1024Mi"}}],
    }
    assert contains(stored, desired)
    assert not contains({"resources": {"limits": {"cpu": "1", "memory": "2Gi"}}}, {"resources": desired["resources"]})
    assert not contains({"image": "500m"}, {"image": "0.5"})  # not a quantity field: compared as text


def test_replicas_written_through_the_scale_subresource_belong_to_the_autoscaler():
    """managedFields as the API server records them after the HPA controller scaled the Deployment: replicas is
    then not drift, and a repair of other drift leaves it out; an ordinary edit of replicas is still drift."""
    desired = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "chat", "labels": {"a": "b"}},
        "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "server", "image": "s:1"}]}}},
    }

    def observed(replicas: int, image: str, scaler: dict) -> dict:
        operator = {"manager": "kubetune", "operation": "Update", "fieldsV1": {"f:spec": {"f:template": {}}}}
        return {
            "metadata": {"name": "chat", "labels": {"a": "b"}, "managedFields": [operator, scaler]},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "server", "image": image}]}}},
        }

    hpa = {"manager": "hpa", "operation": "Update", "subresource": "scale", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
    edit = {"manager": "kubectl-edit", "operation": "Update", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
    assert not drifted(observed(4, "s:1", hpa), desired)
    assert "replicas" not in repair_patch(desired, observed(4, "s:2", hpa))["spec"]
    assert drifted(observed(4, "s:2", hpa), desired), "other drift is still repaired"
    assert drifted(observed(4, "s:1", edit), desired), "an edit of replicas is drift"
    assert repair_patch(desired, observed(4, "s:1", edit))["spec"]["replicas"] == 1


def _msv(**spec) -> ModelServe:
    body = modelserve("default", **spec)
    body["metadata"].update(uid="uid-2", generation=1)
    return ModelServe.model_validate(body)


def _succeeded(name="sentiment", base="Qwen/Qwen2.5-0.5B-Instruct") -> dict:
    return {
        "metadata": {"name": name},
        "status": {
            "phase": "Succeeded",
            "output": {"pvc": {"claimName": f"{name}-output", "path": "adapter"}, "baseModel": {"name": base}},
        },
    }


def test_modelserve_waits_then_renders_children():
    waiting = msv_logic.plan_modelserve(
        _msv(), ModelServeStatus(), {"sentiment": {"status": {"phase": "Running"}}}, {}, SETTINGS, NOW
    )
    assert waiting.phase == "WaitingForAdapters" and waiting.create == []
    ready = msv_logic.plan_modelserve(
        _msv(),
        ModelServeStatus(),
        {"sentiment": _succeeded()},
        {"ConfigMap": None, "Deployment": None, "Service": None},
        SETTINGS,
        NOW,
    )
    assert [c["kind"] for c in ready.create] == ["ConfigMap", "Deployment", "Service"]
    assert ready.phase == "Deploying" and ready.status["url"].endswith(":8000/v1")


def test_modelserve_base_model_mismatch_is_an_error():
    spec = {"baseModel": {"name": "org/other"}}
    plan = msv_logic.plan_modelserve(_msv(**spec), ModelServeStatus(), {"sentiment": _succeeded()}, {}, SETTINGS, NOW)
    assert plan.phase == "Failed" and "was trained on Qwen/Qwen2.5-0.5B-Instruct" in plan.status["message"]


def test_a_fully_fine_tuned_model_is_refused_as_an_adapter_with_how_to_serve_it():
    job = _succeeded()
    job["status"]["output"]["method"] = "full"
    plan = msv_logic.plan_modelserve(_msv(), ModelServeStatus(), {"sentiment": job}, {}, SETTINGS, NOW)
    assert plan.phase == "Failed" and plan.create == []
    assert "used method full and wrote a whole model" in plan.status["message"]
    assert "baseModel: {pvc: {claimName: sentiment-output, path: adapter}}" in plan.status["message"]


def test_a_modelserve_refused_by_its_runtime_then_fixed_is_validated_again():
    """A runtime refusal (RuntimeNotFound, PolicyViolation) sets Validated=False; once the ModelServe deploys, the
    refusal is over and the condition must not keep saying otherwise next to Ready=True."""
    refused = msv_logic.plan_invalid(ModelServeStatus(), "no such runtime", 1, NOW, "RuntimeNotFound")
    status = ModelServeStatus.model_validate(refused.status)
    observed = {"ConfigMap": None, "Deployment": None, "Service": None}
    plan = msv_logic.plan_modelserve(_msv(), status, {"sentiment": _succeeded()}, observed, SETTINGS, NOW)
    conditions = {c["type"]: c for c in plan.status["conditions"]}
    assert plan.phase == "Deploying"
    assert conditions["Validated"]["status"] == "True", conditions["Validated"]


def test_restart_hash_ignores_the_adapter_list():
    resolution = msv_logic.resolve_adapters(_msv(), {"sentiment": _succeeded()})
    config = msv_logic.serve_config(_msv(), resolution)
    assert restart_hash(config) == restart_hash(config.model_copy(update={"adapters": []}))
    assert restart_hash(config) != restart_hash(config.model_copy(update={"merge_adapter": True}))


def test_decoding_defaults_reach_serve_json_and_restart_the_server_only_when_set():
    """Unset, the decoding controls are absent from serve.json (a ModelServe from before them keeps its config and
    restart hash, so an operator upgrade rolls no pods); set, they travel in serve.json and roll the pods, as the
    server reads spec.generation only at start."""
    resolution = msv_logic.resolve_adapters(_msv(), {"sentiment": _succeeded()})
    plain = msv_logic.serve_config(_msv(), resolution)
    decoding = ("topK", "repetitionPenalty", "frequencyPenalty", "presencePenalty")
    assert not set(decoding) & set(plain.to_wire()["generation"])
    generation = {"topK": 40, "repetitionPenalty": 1.15, "frequencyPenalty": 0.4, "presencePenalty": -0.3}
    tuned = msv_logic.serve_config(_msv(generation=generation), resolution)
    assert {key: tuned.to_wire()["generation"][key] for key in decoding} == generation
    assert restart_hash(tuned) != restart_hash(plain)


def test_resync_reconciles_unfinished_finetunejobs_and_every_modelserve():
    """The periodic pass replaces kopf timers (which would put a finalizer on every object)."""
    from types import SimpleNamespace

    from kubetune.operator import kube as k8s
    from kubetune.operator.runner import resync_once

    def obj(name: str, phase: str | None = None, deleting: bool = False) -> dict:
        meta = {"name": name, "namespace": "team"} | ({"deletionTimestamp": "x"} if deleting else {})
        return {"metadata": meta, "status": {"phase": phase} if phase else {}}

    listed = {
        k8s.FINETUNEJOBS: [obj("running", "Running"), obj("done", "Succeeded"), obj("going", "Running", True)],
        k8s.MODELSERVES: [obj("serve", "Ready")],
    }
    calls: list[tuple[str, str]] = []
    service = lambda kind: SimpleNamespace(reconcile=lambda ns, name: calls.append((kind, name)))  # noqa: E731
    ctx = SimpleNamespace(
        settings=OperatorSettings(watch_namespaces=("team",)),
        kube=SimpleNamespace(list=lambda res, ns: listed[res] if ns == "team" else []),
        finetunejobs=service("ftj"),
        modelserves=service("msv"),
    )
    resync_once(ctx)
    assert calls == [("ftj", "running"), ("msv", "serve")]


def test_leader_election_timing_follows_client_go():
    from kubetune.operator.runner import elector_for

    elector = elector_for(OperatorSettings(leader_election=True, leader_election_namespace="ops"), api=None)
    assert (elector.lease_duration, elector.renew_deadline, elector.retry_period) == (15, 10, 2)
    assert elector.namespace == "ops" and elector.name == "kubetune-operator"


OWNER = Owner("kubetune.dev/v1alpha1", "FineTuneJob", "sentiment", "ns", "uid-new")


def _child(**meta: object) -> dict:
    """The spec ConfigMap as found on the server, with `meta` merged into its metadata."""
    child = trainer_children(OWNER, FineTuneJobSpec.model_validate(finetunejob("ns")["spec"]), SETTINGS)[0]
    return {**child, "metadata": {**child["metadata"], **meta}}


def _ref(kind: str, name: str, uid: str) -> list[dict]:
    return [{"apiVersion": "v1", "kind": kind, "name": name, "uid": uid, "controller": True}]


@pytest.mark.parametrize(
    ("meta", "verdict", "named"),
    [
        ({}, drift.OURS, "is ours"),
        ({"deletionTimestamp": NOW}, drift.TERMINATING, "being deleted"),
        ({"ownerReferences": _ref("FineTuneJob", "sentiment", "uid-old")}, drift.PREDECESSOR, "uid-old"),
        ({"ownerReferences": _ref("FineTuneJob", "other", "uid-x")}, drift.FOREIGN, "FineTuneJob/other"),
        ({"ownerReferences": _ref("Deployment", "sentiment", "uid-y")}, drift.FOREIGN, "Deployment/sentiment"),
        ({"ownerReferences": []}, drift.FOREIGN, "no controller"),
    ],
)
def test_ownership_uses_the_controller_reference_uid(meta: dict, verdict: str, named: str):
    desired = _child()
    verdict_seen, why = drift.ownership(_child(**meta), desired)
    assert verdict_seen == verdict and named in why and "ConfigMap/sentiment-spec" in why


def test_a_kept_claim_is_ours_only_with_all_our_labels():
    spec = FineTuneJobSpec.model_validate({**finetunejob("ns")["spec"], "output": {"keep": True}})
    claim = next(c for c in trainer_children(OWNER, spec, SETTINGS) if c["kind"] == "PersistentVolumeClaim")
    assert "ownerReferences" not in claim["metadata"]
    assert drift.ownership(claim, claim)[0] == drift.OURS
    stranger = {**claim, "metadata": {**claim["metadata"], "labels": {"app": "theirs"}}}
    assert drift.ownership(stranger, claim)[0] == drift.FOREIGN


class _RecordingKube:
    """Records status writes and events (what _blocked sends)."""

    def __init__(self) -> None:
        self.patches: list[dict] = []
        self.events: list[tuple[str, str, str]] = []

    def patch(self, res, namespace, name, patch, subresource=None):
        self.patches.append(patch)

    def event(self, owner, type_, reason, message):
        self.events.append((type_, reason, message))


def test_refusals_become_a_condition_and_back_off_exponentially():
    kube = _RecordingKube()
    ctx = services.OperatorContext(SETTINGS, kube, OperatorMetrics())  # type: ignore[arg-type]
    body = {"apiVersion": "kubetune.dev/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "a", "namespace": "n"}}
    refused = services.ChildProblem(services.CHILD_REFUSED, "exceeded quota", waiting=False)
    delays = [ctx.finetunejobs._blocked(body, FineTuneJobStatus(), refused).delay for _ in range(8)]
    assert delays == [5, 10, 20, 40, 80, 160, 300, 300]
    created = next(c for c in kube.patches[-1]["status"]["conditions"] if c["type"] == "JobCreated")
    assert (created["status"], created["reason"], created["message"]) == ("False", "ChildRefused", "exceeded quota")
    assert kube.events[0] == ("Warning", "ChildRefused", "exceeded quota")
    waiting = services.ChildProblem(drift.TERMINATING, "ConfigMap/x is being deleted", waiting=True)
    assert ctx.finetunejobs._blocked(body, FineTuneJobStatus(), waiting).delay == services.WAIT_SECONDS
    conflict = next(c for c in kube.patches[-1]["status"]["conditions"] if c["type"] == "ChildConflict")
    assert (conflict["status"], conflict["reason"]) == ("True", "Terminating")
    ctx.finetunejobs._settled(body)
    assert ctx.finetunejobs._blocked(body, FineTuneJobStatus(), refused).delay == 5


# ---- status truth ------------------------------------------------------------------------------
def _pod(name="sentiment-train-a", created="2026-01-01T00:00:00Z", **status) -> dict:
    return {"metadata": {"name": name, "uid": f"uid-{name}", "creationTimestamp": created}, "status": status}


def test_pending_cause_reads_the_scheduler_the_kubelet_and_the_job_controller():
    job = {**_job(active=1, ready=0), "metadata": {"name": "sentiment-train", "uid": "uid-job"}}
    unschedulable = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes"}
    assert ftj_logic.pending_cause(job, [_pod(phase="Pending", conditions=[unschedulable])], []) == (
        "Unschedulable",
        "0/3 nodes",
    )
    pulling = {"name": "trainer", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "no such image"}}}
    reason, message = ftj_logic.pending_cause(job, [_pod(phase="Pending", containerStatuses=[pulling])], [])
    assert reason == "ImagePullBackOff" and "no such image" in message
    starting = {"name": "trainer", "state": {"waiting": {"reason": "ContainerCreating"}}}
    assert ftj_logic.pending_cause(job, [_pod(phase="Pending", containerStatuses=[starting])], []) is None
    refused = {"reason": "FailedCreate", "message": "exceeded quota", "involvedObject": {"uid": "uid-job"}}
    other = {"reason": "FailedCreate", "message": "someone else's", "involvedObject": {"uid": "uid-other"}}
    assert ftj_logic.pending_cause(job, [], [other, refused]) == ("FailedCreate", "exceeded quota")
    assert ftj_logic.pending_cause(job, [], [other]) is None
    running = {**job, "status": {"active": 1, "ready": 1}}
    assert ftj_logic.pending_cause(running, [_pod(phase="Pending", conditions=[unschedulable])], []) is None


def test_a_pending_cause_is_the_status_and_a_failure_sets_succeeded_false():
    plan = ftj_logic.plan_finetunejob(
        _ftj().model_copy(update={"status": FineTuneJobStatus(phase="Pending", job_name="sentiment-train")}),
        _job(active=1, ready=0),
        None,
        SETTINGS,
        NOW,
        ("Unschedulable", "0/3 nodes are available"),
    )
    assert plan.status["phase"] == "Pending" and plan.status["message"] == "Unschedulable: 0/3 nodes are available"
    running = next(c for c in plan.status["conditions"] if c["type"] == "Running")
    assert (running["status"], running["reason"]) == ("False", "Unschedulable")
    assert [e.reason for e in plan.events] == ["Unschedulable"]
    failed = ftj_logic.plan_finetunejob(
        _ftj(), _job(conditions=[_cond("Failed", "BackoffLimitExceeded")]), None, SETTINGS, NOW
    )
    succeeded = next(c for c in failed.status["conditions"] if c["type"] == "Succeeded")
    assert (succeeded["status"], succeeded["reason"]) == ("False", "BackoffLimitExceeded")


def _deployment(generation=1, observed=1, replicas=1, updated=1, available=1, ready=1) -> dict:
    status = {"observedGeneration": observed, "replicas": replicas, "updatedReplicas": updated}
    status.update(availableReplicas=available, readyReplicas=ready)
    return {"metadata": {"generation": generation}, "status": status}


def test_modelserve_is_ready_only_when_the_rollout_is_complete():
    assert msv_logic._deployment_state(_deployment(), 1)[:2] == ("Ready", "RolloutComplete")
    stuck = _deployment(replicas=2, updated=1, available=1, ready=1)  # the old replica serves, the new one does not
    assert msv_logic._deployment_state(stuck, 1)[:2] == ("Deploying", "RolloutInProgress")
    assert msv_logic._deployment_state(_deployment(generation=2), 1)[0] == "Deploying"
    assert msv_logic._deployment_state(_deployment(available=0, ready=0), 1)[0] == "Deploying"
    assert msv_logic._deployment_state(_deployment(replicas=0, updated=0, available=0, ready=0), 0)[1] == "ScaledToZero"


def test_trainer_pods_request_cpu_and_memory_and_push_with_their_own_token():
    spec = {"resources": {"gpus": 1}, "output": {"hub": {"repo": "acme/a", "tokenSecretRef": {"name": "push"}}}}
    children = trainer_children(Owner("v", "FineTuneJob", "x", "ns", "u"), _ftj(**spec).spec, OperatorSettings())
    container = children[-1]["spec"]["template"]["spec"]["containers"][0]
    # never BestEffort; the Hub model downloads into a scratch volume whose size limit is also requested
    assert container["resources"]["requests"] == {"cpu": "1", "memory": "4Gi", "ephemeral-storage": "50Gi"}
    assert "cpu" not in container["resources"]["limits"]  # a request alone: no limit guessed
    env = {item["name"]: item for item in container["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "hf-token"  # the base model's read token
    assert env["HF_PUSH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "push"
    context = children[-1]["spec"]["template"]["spec"]["securityContext"]
    assert context == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}  # no fixed UID/fsGroup
    assert pod.pod_security_context(2000)["fsGroup"] == 2000


def _replica(name: str, **states: tuple) -> ReplicaReport:
    """A replica's report: adapter name -> (state, folder[, message])."""
    adapters = {
        adapter: ReplicaAdapter(name=adapter, pvc=PvcPath(claim_name="c", path=spec[1]), state=spec[0], message=None)
        for adapter, spec in states.items()
    }
    return ReplicaReport(name, adapters)


def test_adapter_state_comes_from_what_each_ready_replica_reports():
    resolved = [ResolvedAdapter(name=n, pvc=PvcPath(claim_name="c", path=n)) for n in ("a", "b")]
    states = lambda reports: [(s.name, s.state, s.loaded_replicas) for s in served_adapters(resolved, reports)]  # noqa: E731
    assert states([]) == [("a", "Pending", 0), ("b", "Pending", 0)]
    both = [_replica("p1", a=("Loaded", "a"), b=("Loaded", "b")), _replica("p2", a=("Loaded", "a"))]
    assert states(both) == [("a", "Loaded", 2), ("b", "Pending", 1)]
    old_version = [_replica("p1", a=("Loaded", "a"), b=("Loaded", "old-b"))]  # not yet the replacement's folder
    assert states(old_version) == [("a", "Loaded", 1), ("b", "Pending", 0)]
    refused = _replica("p1", a=("Loaded", "a"), b=("Refused", "b"))
    refused.adapters["b"].message = "trained on org/other"
    served = served_adapters(resolved, [refused])
    assert served[1].state == "Refused" and served[1].message == "trained on org/other"
    assert loaded_condition(served)[:2] == ("False", "AdapterRefused") and "'b'" in loaded_condition(served)[2]
    silent = [ReplicaReport("p1", None, "timed out")]
    assert states(silent)[0][1] == "Unknown" and loaded_condition(served_adapters(resolved, silent))[0] == "Unknown"
    assert needs_recheck(served_adapters(resolved, both), both) and not needs_recheck(served, [refused])
    assert not needs_recheck(served_adapters(resolved, []), [])  # no replica ready: the Deployment's events follow
    everything = [_replica("p1", a=("Loaded", "a"), b=("Loaded", "b"))]
    assert loaded_condition(served_adapters(resolved, everything))[:2] == ("True", "Loaded")


def test_modelserve_status_reports_the_servers_adapter_state():
    observed = {"ConfigMap": None, "Deployment": None, "Service": None}
    plan = msv_logic.plan_modelserve(
        _msv(), ModelServeStatus(), {"sentiment": _succeeded()}, observed, SETTINGS, NOW, [_replica("p1")]
    )
    (adapter,) = plan.status["adapters"]
    assert (adapter["name"], adapter["state"], adapter["loadedReplicas"]) == ("sentiment", "Pending", 0)
    loaded = next(c for c in plan.status["conditions"] if c["type"] == "AdaptersLoaded")
    assert (loaded["status"], loaded["reason"]) == ("False", "Loading") and plan.recheck
    assert not [e for e in plan.events if e.reason == "AdapterRefused"]
    refused = _replica("p1", sentiment=("Refused", "adapter"))
    refused.adapters["sentiment"].pvc = PvcPath(claim_name="sentiment-output", path="adapter")
    refused.adapters["sentiment"].message = "trained on org/other"
    args = (_msv(), ModelServeStatus(), {"sentiment": _succeeded()}, observed, SETTINGS, NOW, [refused])
    first = msv_logic.plan_modelserve(*args)
    (event,) = [e for e in first.events if e.reason == "AdapterRefused"]
    assert event.type == "Warning" and "trained on org/other" in event.message
    after = ModelServeStatus.model_validate(first.status)
    again = msv_logic.plan_modelserve(*args[:1], after, *args[2:])
    assert not [e for e in again.events if e.reason == "AdapterRefused"], "one Event per new refusal"


def _server_pod(name: str, owner: str, ready: bool = True, ip: str | None = "10.0.0.5", **meta) -> dict:
    return {
        "metadata": {
            "name": name,
            "labels": {"pod-template-hash": "abc"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": owner, "controller": True}],
            **meta,
        },
        "spec": {"containers": [{"name": "server", "ports": [{"name": "http", "containerPort": 8123}]}]},
        "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def test_only_ready_pods_of_our_own_deployment_are_asked():
    deployment = {"metadata": {"name": "srv"}}
    pods = [
        _server_pod("ours", "srv-abc"),
        _server_pod("lookalike", "other-abc"),  # same labels, another owner: never asked
        _server_pod("starting", "srv-abc", ready=False),
        _server_pod("no-ip", "srv-abc", ip=None),
        _server_pod("leaving", "srv-abc", deletionTimestamp="2026-01-01T00:00:00Z"),
    ]
    assert [pod["metadata"]["name"] for pod in server_adapters.server_pods(deployment, pods)] == ["ours"]


def test_asking_a_replica_parses_its_report_and_never_raises():
    import http.server
    import threading

    body = {"adapters": [{"name": "a", "pvc": {"claimName": "c", "path": "a"}, "state": "Loaded"}]}

    class Replica(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            payload = json.dumps(body if self.path == "/adapters" else {"adapters": "nonsense"}).encode()
            self.send_response(200)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *_) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Replica)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        pod = _server_pod("p", "srv-abc", ip="127.0.0.1")
        pod["spec"]["containers"][0]["ports"][0]["containerPort"] = server.server_address[1]
        report = server_adapters.ask(pod)
        assert report.error is None and report.adapters["a"].state == "Loaded"
    finally:
        server.shutdown()
        server.server_close()
    gone = server_adapters.ask(pod, timeout=0.5)  # nothing listens any more
    assert gone.adapters is None and "failed" in gone.error


def test_trainer_pods_take_tracking_settings_from_secrets_by_reference_only():
    owner = Owner("v", "FineTuneJob", "x", "ns", "u")
    plain = trainer_children(owner, _ftj().spec, OperatorSettings())[-1]["spec"]["template"]["spec"]["containers"][0]
    assert "envFrom" not in plain  # the default (TensorBoard files) needs no Secret
    tracking = {"mlflow": {"secretName": "ml"}, "wandb": {"secretName": "wb", "project": "chat"}}
    job = trainer_children(owner, _ftj(tracking=tracking).spec, OperatorSettings())[-1]
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["envFrom"] == [{"secretRef": {"name": "ml"}}, {"secretRef": {"name": "wb"}}]
    assert not any(item["name"].startswith(("MLFLOW_", "WANDB_")) for item in container["env"])  # the trainer's job
