"""FineTuneRuntime policy (operator/policy.py): which runtime applies, what it refuses, what it renders."""

from __future__ import annotations

import pytest
from kubetune.api.finetunejob import FineTuneJobSpec
from kubetune.api.modelserve import ModelServeSpec
from kubetune.api.runtime_policy import FineTuneRuntimeSpec
from kubetune.operator import policy
from kubetune.operator.settings import OperatorSettings

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


def test_the_named_runtime_wins_over_the_default():
    settings = OperatorSettings(default_runtime="default")
    assert policy.runtime_name("a100", settings) == "a100"
    assert policy.runtime_name(None, settings) == "default"
    assert policy.runtime_name(None, OperatorSettings()) is None


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
