"""FineTuneRuntime policy (operator/policy.py): which runtime applies, what it refuses, what it renders."""

from __future__ import annotations

import kopf
import pytest
from kubetune.api.finetunejob import FineTuneJobSpec, FineTuneJobStatus
from kubetune.api.modelserve import ModelServeSpec
from kubetune.api.resources import FineTuneJob
from kubetune.api.runtime_policy import FineTuneRuntimeSpec
from kubetune.operator import policy, services
from kubetune.operator.metrics import OperatorMetrics
from kubetune.operator.settings import OperatorSettings
from pydantic import ValidationError

from tests.cluster.helpers import finetunejob, modelserve

RUNTIME = FineTuneRuntimeSpec.model_validate(
    {
        "trainerImage": "r/trainer:1",
        "serverImage": "r/server:1",
        "nodeSelector": {"pool": "a100"},
        "tolerations": [{"key": "gpu", "operator": "Exists"}],
        "gpuResourceName": "amd.com/gpu",
        "maxGpus": 2,
        "allowedBaseModels": ["Qwen/*", "pvc:models/*"],
        "defaultQueueName": "team-a",
        "storageClassName": "fast",
    }
)


def _ftj(**spec) -> FineTuneJobSpec:
    return FineTuneJobSpec.model_validate(finetunejob("ns", **spec)["spec"])


def test_the_named_runtime_wins_over_the_namespace_s_and_the_operator_s_default():
    settings = OperatorSettings(default_runtime="default")
    assert policy.runtime_name("a100", "team-a", ["l4"], settings) == "a100"
    assert policy.runtime_name(None, "team-a", ["l4"], settings) == "l4"
    assert policy.runtime_name(None, "team-a", [], settings) == "default"
    assert policy.runtime_name(None, "team-a", [], OperatorSettings()) is None
    assert policy.runtime_name(None, "team-a", ["l4", "l4"], settings) == "l4"  # listed twice: still one runtime


def test_two_runtimes_claiming_a_namespace_are_refused_naming_both():
    with pytest.raises(policy.RuntimeConflict) as refused:
        policy.runtime_name(None, "team-a", ["l4", "a100"], OperatorSettings(default_runtime="default"))
    message = str(refused.value)
    assert "namespace team-a" in message and "a100, l4" in message and "defaultForNamespaces" in message
    assert policy.runtime_name("h100", "team-a", ["l4", "a100"], OperatorSettings()) == "h100"  # named: no conflict


def test_namespace_claims_invert_the_runtimes_lists():
    claims = policy.namespace_claims({"a100": ["team-a", "team-b", "team-a"], "l4": ["team-b"], "cpu": []})
    assert claims == {"team-a": ["a100"], "team-b": ["a100", "l4"]}


@pytest.mark.parametrize("bad", ["Team-A", "team_a", "-a", "a" * 64, ""])
def test_default_for_namespaces_takes_namespace_names_only(bad):
    with pytest.raises(ValidationError) as refused:
        FineTuneRuntimeSpec.model_validate({"defaultForNamespaces": ["ok", bad]})
    assert "defaultForNamespaces" in str(refused.value)


def test_a_compliant_spec_has_no_violations():
    assert policy.finetunejob_violations(_ftj(), "a100", RUNTIME) == []


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"image": "x/y:1"}, "spec.image is not allowed by FineTuneRuntime a100"),
        ({"resources": {"gpus": 3}}, "spec.resources.gpus 3 exceeds maxGpus 2"),
        ({"baseModel": {"name": "meta-llama/Llama-3.1-8B"}}, "'meta-llama/Llama-3.1-8B' is not allowed"),
        ({"baseModel": {"pvc": {"claimName": "other", "path": "m"}}}, "'pvc:other/m' is not allowed"),
    ],
)
def test_each_violation_names_field_limit_and_runtime(spec, fragment):
    [problem] = policy.finetunejob_violations(_ftj(**spec), "a100", RUNTIME)
    assert fragment in problem


def test_an_allowed_override_and_an_empty_model_list_pass():
    lenient = RUNTIME.model_copy(update={"allow_image_override": True, "allowed_base_models": []})
    assert policy.finetunejob_violations(_ftj(image="x/y:1", baseModel={"name": "a/b"}), "r", lenient) == []


def test_the_effective_spec_carries_the_runtime():
    spec = policy.effective_finetunejob(_ftj(resources={"nodeSelector": {"zone": "z1"}}), RUNTIME)
    assert spec.image == "r/trainer:1" and spec.queue_name == "team-a"
    assert spec.resources.node_selector == {"zone": "z1", "pool": "a100"}
    assert [t.key for t in spec.resources.tolerations] == ["gpu"]
    assert spec.resources.gpu_resource_name == "amd.com/gpu"
    assert spec.output.storage_class_name == "fast"
    own = policy.effective_finetunejob(_ftj(queueName="mine", output={"storageClassName": "slow"}), RUNTIME)
    assert own.queue_name == "mine" and own.output.storage_class_name == "slow"


def test_modelserve_load_balancer_needs_the_runtime_s_permission():
    spec = ModelServeSpec.model_validate(modelserve("ns", service={"type": "LoadBalancer"})["spec"])
    [problem] = policy.modelserve_violations(spec, "a100", RUNTIME)
    assert "LoadBalancer is not allowed" in problem
    allowed = RUNTIME.model_copy(update={"allow_load_balancer": True})
    assert policy.modelserve_violations(spec, "a100", allowed) == []
    assert policy.effective_modelserve(spec, RUNTIME).image == "r/server:1"


def test_max_nodes():
    spec = FineTuneJobSpec.model_validate(
        finetunejob("ns", resources={"nodes": 3}, output={"accessMode": "ReadWriteMany"})["spec"]
    )
    [problem] = policy.finetunejob_violations(spec, "a100", RUNTIME.model_copy(update={"max_nodes": 2}))
    assert "spec.resources.nodes 3 exceeds maxNodes 2" in problem


class _RuntimeLister:
    """Answers the LIST of FineTuneRuntimes (the fallback when no kopf index is attached)."""

    def __init__(self, runtimes: dict[str, list[str]]) -> None:
        self.items = [{"metadata": {"name": n}, "spec": {"defaultForNamespaces": ns}} for n, ns in runtimes.items()]
        self.calls = 0

    def list(self, res, namespace):
        assert (res.plural, namespace) == ("finetuneruntimes", None)
        self.calls += 1
        return self.items


def test_the_namespace_s_runtimes_come_from_the_index_when_attached_else_a_list():
    kube = _RuntimeLister({"a100": ["team-a"], "l4": ["team-a", "team-b"], "cpu": []})
    ctx = services.OperatorContext(OperatorSettings(), kube, OperatorMetrics())  # type: ignore[arg-type]
    assert ctx.namespace_runtimes("team-a") == ["a100", "l4"]
    assert ctx.namespace_runtimes("team-c") == []
    assert kube.calls == 2
    ctx.runtime_claims = {"team-b": ["l4", "l4"]}  # kopf's index: one value per runtime listing the namespace
    assert ctx.namespace_runtimes("team-b") == ["l4"] and ctx.namespace_runtimes("team-a") == []
    assert kube.calls == 2


class _ServiceKube:
    """GETs of runtimes from a dict; records status patches and events (what a refusal writes)."""

    def __init__(self, runtimes: dict[str, dict]) -> None:
        self.runtimes, self.patches, self.events = runtimes, [], []

    def get(self, res, namespace, name):
        spec = self.runtimes.get(name)
        return None if spec is None else {"metadata": {"name": name}, "spec": spec}

    def patch(self, res, namespace, name, patch, subresource=None):
        self.patches.append(patch)

    def event(self, owner, type_, reason, message):
        self.events.append((type_, reason, message))


def _service(runtimes: dict[str, dict], claims: dict[str, list[str]]):
    kube = _ServiceKube(runtimes)
    ctx = services.OperatorContext(OperatorSettings(default_runtime="default"), kube, OperatorMetrics())  # type: ignore[arg-type]
    ctx.runtime_claims = claims
    body = finetunejob("team-a")
    body["metadata"].update(uid="u1", generation=1)
    return ctx.finetunejobs, kube, FineTuneJob.model_validate(body), body


def test_a_conflict_refuses_a_new_object_and_leaves_a_running_one_alone():
    runtimes = {"a100": {"trainerImage": "r/a100:1"}, "l4": {"trainerImage": "r/l4:1"}}
    service, kube, ftj, body = _service(runtimes, {"team-a": ["a100", "l4"]})
    _, phase, _ = service._with_runtime(ftj, FineTuneJobStatus(), body, fresh=True)
    assert phase == "Failed"
    validated = next(c for c in kube.patches[-1]["status"]["conditions"] if c["type"] == "Validated")
    assert validated["reason"] == "RuntimeConflict" and "a100, l4" in validated["message"]
    kube.patches.clear()
    rendered, phase, lost = service._with_runtime(ftj, FineTuneJobStatus(job_name="sentiment-train"), body, fresh=False)
    assert (phase, kube.patches, rendered.spec.image, lost) == (None, [], ftj.spec.image, True)


def test_the_namespace_s_runtime_is_applied_and_a_vanished_one_is_retried_not_skipped():
    service, _, ftj, body = _service({"a100": {"trainerImage": "r/a100:1"}}, {"team-a": ["a100"]})
    rendered, phase, lost = service._with_runtime(ftj, FineTuneJobStatus(), body, fresh=True)
    assert (phase, rendered.spec.image, lost) == (None, "r/a100:1", False)
    service, _, ftj, body = _service({}, {"team-a": ["a100"]})  # deleted since the watch saw it
    with pytest.raises(kopf.TemporaryError):
        service._with_runtime(ftj, FineTuneJobStatus(), body, fresh=True)
