"""Admin-owned FineTuneRuntimes on the real control plane: the operator reads the runtime an object names (or its
default runtime) with its read-only RBAC, renders the trainer Job with the runtime's image, GPU pool, queue and
storage class, and refuses a FineTuneJob that breaks the runtime's policy with a clear condition (no Job)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.envtest.fixtures import RealOperatorControl, operator_settings_for
from tests.support.kube.server import DEPLOYMENTS, FTJ, JOBS, MSV, PVCS, SERVICES

from .helpers import condition, finetunejob, modelserve, operator_requests, wait_phase, wait_request

RUNTIMES = ("kubetune.dev/v1alpha1", "finetuneruntimes")
GPU_POOL = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def _runtime_spec() -> dict:
    return {
        "trainerImage": "registry.example.com/kubetune/trainer:a100",
        "nodeSelector": GPU_POOL,
        "tolerations": [TAINT],
        "gpuResourceName": "nvidia.com/gpu",
        "maxGpus": 2,
        "allowedBaseModels": ["Qwen/*", "pvc:models/*"],
        "defaultQueueName": "team-a",
        "storageClassName": "fast-ssd",
    }


@pytest.fixture
def runtime(control_plane, ns: str) -> Iterator[str]:
    """A FineTuneRuntime created by the admin, named after the test's namespace (runtimes are cluster-scoped)."""
    name = f"a100-{ns}"[:253]
    body = {"apiVersion": RUNTIMES[0], "kind": "FineTuneRuntime", "metadata": {"name": name}, "spec": _runtime_spec()}
    control_plane.admin.create(RUNTIMES, None, body)
    yield name
    control_plane.admin.delete(RUNTIMES, None, name)


@pytest.fixture
def default_runtime_operator(control_plane, runtime, ns: str) -> Iterator[RealOperatorControl]:
    """An operator whose default runtime (setting default_runtime) is this test's runtime."""
    control = RealOperatorControl(control_plane, operator_settings_for(control_plane, (ns,), default_runtime=runtime))
    control.start()
    yield control
    control.stop()
    assert control.refused() == []


def test_the_named_runtime_shapes_the_trainer_job(control_plane, runtime, operator, kube, ns):
    since = control_plane.audit.offset()
    user_selector = {"topology.kubernetes.io/zone": "eu-west-1a"}
    kube.create(FTJ, ns, finetunejob(ns, runtimeName=runtime, resources={"gpus": 2, "nodeSelector": user_selector}))
    job = kube.wait_for(JOBS, ns, "sentiment-train", lambda j: j is not None, what="to be created")
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "registry.example.com/kubetune/trainer:a100"
    assert pod["nodeSelector"] == {**user_selector, **GPU_POOL}
    assert TAINT in pod["tolerations"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"  # the runtime's default queue
    assert kube.get(PVCS, ns, "sentiment-output")["spec"]["storageClassName"] == "fast-ssd"
    ftj = wait_phase(kube, ns, "sentiment", "Queued")
    assert condition(ftj, "Validated")["status"] == "True"
    assert ftj["spec"]["runtimeName"] == runtime
    assert "image" not in ftj["spec"] and "queueName" not in ftj["spec"], "the stored spec is never changed"
    assert operator_requests(control_plane, since, "get", "finetuneruntimes")  # read with its own RBAC


def test_a_policy_violation_is_refused_with_a_clear_condition(control_plane, runtime, operator, kube, ns):
    since = control_plane.audit.offset()
    spec = {
        "runtimeName": runtime,
        "image": "evil.example.com/miner:latest",
        "baseModel": {"name": "meta-llama/Llama-3.1-8B"},
        "resources": {"gpus": 8},
    }
    kube.create(FTJ, ns, finetunejob(ns, **spec))
    ftj = wait_phase(kube, ns, "sentiment", "Failed")
    validated = condition(ftj, "Validated")
    assert (validated["status"], validated["reason"]) == ("False", "PolicyViolation")
    message = validated["message"]
    assert "spec.image is not allowed" in message and "allowImageOverride" in message
    assert "spec.resources.gpus 8 exceeds maxGpus 2" in message
    assert "'meta-llama/Llama-3.1-8B' is not allowed" in message and "Qwen/*" in message
    assert runtime in message
    assert kube.find(JOBS, ns, "sentiment-train") is None
    assert operator_requests(control_plane, since, "create", "jobs") == []


def test_a_missing_runtime_is_refused(operator, kube, ns):
    kube.create(FTJ, ns, finetunejob(ns, runtimeName="no-such-runtime"))
    ftj = wait_phase(kube, ns, "sentiment", "Failed")
    validated = condition(ftj, "Validated")
    assert validated["reason"] == "RuntimeNotFound" and "no-such-runtime" in validated["message"]
    assert kube.find(JOBS, ns, "sentiment-train") is None


def test_the_default_runtime_applies_to_a_finetunejob_that_names_none(default_runtime_operator, kube, ns):
    kube.create(FTJ, ns, finetunejob(ns, name="plain"))
    kube.create(FTJ, ns, finetunejob(ns, name="greedy", resources={"gpus": 4}))
    job = kube.wait_for(JOBS, ns, "plain-train", lambda j: j is not None, what="to be created")
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example.com/kubetune/trainer:a100"
    ftj = wait_phase(kube, ns, "greedy", "Failed")
    assert condition(ftj, "Validated")["reason"] == "PolicyViolation"
    assert "maxGpus 2" in ftj["status"]["message"]


def test_a_load_balancer_modelserve_is_refused_unless_the_runtime_allows_it(runtime, operator, kube, ns):
    kube.create(MSV, ns, modelserve(ns, runtimeName=runtime, service={"type": "LoadBalancer"}))
    msv = wait_phase(kube, ns, "chat", "Failed", res=MSV)
    validated = condition(msv, "Validated")
    assert (validated["status"], validated["reason"]) == ("False", "PolicyViolation")
    assert "LoadBalancer is not allowed" in validated["message"] and "allowLoadBalancer" in validated["message"]
    assert kube.find(DEPLOYMENTS, ns, "chat") is None and kube.find(SERVICES, ns, "chat") is None


def _create_runtime(control_plane, name: str, spec: dict) -> None:
    body = {"apiVersion": RUNTIMES[0], "kind": "FineTuneRuntime", "metadata": {"name": name}, "spec": spec}
    control_plane.admin.create(RUNTIMES, None, body)


@pytest.fixture
def namespace_runtimes(control_plane, ns: str) -> Iterator[list[str]]:
    """The runtimes a test creates (before it starts its operator: kopf fills its runtime index from the initial
    LIST before any handler runs, so no watch race is involved); deleted after it."""
    created: list[str] = []
    yield created
    for name in created:
        control_plane.admin.delete(RUNTIMES, None, name)


def test_the_runtime_naming_the_namespace_applies_without_runtime_name(control_plane, namespace_runtimes, ns, kube):
    """No spec.runtimeName: the runtime whose defaultForNamespaces lists the namespace shapes the Job, over the
    operator's default runtime; a runtime listing other namespaces only changes nothing here."""
    ours, other, operator_default = f"ns-{ns}"[:253], f"other-{ns}"[:253], f"opdefault-{ns}"[:253]
    _create_runtime(control_plane, ours, {**_runtime_spec(), "defaultForNamespaces": ["elsewhere", ns]})
    _create_runtime(
        control_plane, other, {"trainerImage": "registry.example.com/other:1", "defaultForNamespaces": ["x"]}
    )
    _create_runtime(control_plane, operator_default, {"trainerImage": "registry.example.com/opdefault:1"})
    namespace_runtimes += [ours, other, operator_default]
    control = RealOperatorControl(
        control_plane, operator_settings_for(control_plane, (ns,), default_runtime=operator_default)
    )
    control.start()
    try:
        since = control_plane.audit.offset()
        kube.create(FTJ, ns, finetunejob(ns))
        job = kube.wait_for(JOBS, ns, "sentiment-train", lambda j: j is not None, what="to be created")
        pod = job["spec"]["template"]["spec"]
        assert pod["containers"][0]["image"] == "registry.example.com/kubetune/trainer:a100"
        assert pod["nodeSelector"] == GPU_POOL
        assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
        ftj = wait_phase(kube, ns, "sentiment", "Queued")
        assert "runtimeName" not in ftj["spec"], "the stored spec is never changed"
        assert operator_requests(control_plane, since, "get", "finetuneruntimes")
    finally:
        control.stop()
    assert control.refused() == []


def test_two_runtimes_claiming_the_namespace_are_refused_naming_both(control_plane, namespace_runtimes, ns, kube):
    first, second = f"first-{ns}"[:253], f"second-{ns}"[:253]
    _create_runtime(control_plane, first, {**_runtime_spec(), "defaultForNamespaces": [ns]})
    _create_runtime(control_plane, second, {"trainerImage": "registry.example.com/l4:1", "defaultForNamespaces": [ns]})
    namespace_runtimes += [first, second]
    control = RealOperatorControl(control_plane, operator_settings_for(control_plane, (ns,)))
    control.start()
    try:
        kube.create(FTJ, ns, finetunejob(ns, name="ambiguous"))
        kube.create(FTJ, ns, finetunejob(ns, name="explicit", runtimeName=second))
        ftj = wait_phase(kube, ns, "ambiguous", "Failed")
        validated = condition(ftj, "Validated")
        assert (validated["status"], validated["reason"]) == ("False", "RuntimeConflict")
        assert first in validated["message"] and second in validated["message"]
        assert f"namespace {ns}" in validated["message"]
        assert kube.find(JOBS, ns, "ambiguous-train") is None
        job = kube.wait_for(JOBS, ns, "explicit-train", lambda j: j is not None, what="to be created")
        assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example.com/l4:1"
    finally:
        control.stop()
    assert control.refused() == []


def test_a_runtime_deleted_under_a_running_modelserve_does_not_reshape_its_server(
    control_plane, operator, kube, kubelet, ns
):
    """Once a ModelServe runs, its runtime's later deletion must not roll its server out without the runtime's image
    and GPU pool (the operator no longer knows them): the Deployment stays as the runtime shaped it."""
    name = f"serve-{ns}"[:253]
    spec = {**_runtime_spec(), "serverImage": "registry.example.com/kubetune/server:a100"}
    _create_runtime(control_plane, name, spec)
    try:
        body = modelserve(ns, "plain", jobs=(), baseModel={"name": "Qwen/Qwen2.5-0.5B-Instruct"}, runtimeName=name)
        kube.create(MSV, ns, body)
        shaped = kube.wait_for(DEPLOYMENTS, ns, "plain", lambda d: d is not None, what="to be created")
        assert shaped["spec"]["template"]["spec"]["containers"][0]["image"] == spec["serverImage"]
    finally:
        control_plane.admin.delete(RUNTIMES, None, name)
    since = control_plane.audit.offset()
    kubelet.deployment_ready(ns, "plain")  # Deployment events: the operator reconciles and reads the runtime again
    wait_request(control_plane, since, "get", "finetuneruntimes")
    wait_phase(kube, ns, "plain", "Ready", res=MSV)
    template = kube.get(DEPLOYMENTS, ns, "plain")["spec"]["template"]["spec"]
    assert template["containers"][0]["image"] == spec["serverImage"]
    assert TAINT in template["tolerations"] and template["nodeSelector"] == GPU_POOL
    assert operator_requests(control_plane, since, "patch", "deployments") == []


def test_an_edit_that_breaks_the_runtime_policy_is_refused_on_a_running_modelserve(
    runtime, operator, kube, kubelet, ns
):
    """A ModelServe's spec can be edited after it deployed: the runtime's policy holds for the edit too (no
    LoadBalancer the runtime does not allow). The running server and its Service are left as they were, and the
    status says it still serves."""
    kube.create(
        MSV, ns, modelserve(ns, "plain", jobs=(), baseModel={"name": "Qwen/Qwen2.5-0.5B-Instruct"}, runtimeName=runtime)
    )
    kube.wait_for(DEPLOYMENTS, ns, "plain", lambda d: d is not None, what="to be created")
    kubelet.deployment_ready(ns, "plain")
    wait_phase(kube, ns, "plain", "Ready", res=MSV)
    kube.patch(MSV, ns, "plain", {"spec": {"service": {"type": "LoadBalancer"}}})
    msv = kube.wait_for(MSV, ns, "plain", lambda m: (condition(m, "Validated") or {}).get("status") == "False", 30)
    assert "LoadBalancer is not allowed" in condition(msv, "Validated")["message"]
    assert "keeps running the last accepted spec" in msv["status"]["message"]
    # The server does go on serving: the status says so rather than Failed.
    assert msv["status"]["phase"] == "Ready" and condition(msv, "Ready")["status"] == "True"
    assert kube.get(SERVICES, ns, "plain")["spec"]["type"] == "ClusterIP"
    kube.patch(MSV, ns, "plain", {"spec": {"service": {"type": "ClusterIP"}}})  # reverted: served as before
    msv = kube.wait_for(MSV, ns, "plain", lambda m: (condition(m, "Validated") or {}).get("status") == "True", 30)
    assert wait_phase(kube, ns, "plain", "Ready", res=MSV)["status"]["observedGeneration"] == 3
