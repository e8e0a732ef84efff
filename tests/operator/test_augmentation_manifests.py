"""A Hub augmentation model needs the model cache even when the base model and the data are on volumes."""

from __future__ import annotations

from kubetune.api import FineTuneJobSpec
from kubetune.operator.manifests.trainer import trainer_model_storage
from kubetune.operator.settings import OperatorSettings

CACHED = OperatorSettings(model_cache_claim="models-cache")
ON_VOLUMES = {
    "baseModel": {"pvc": {"claimName": "models", "path": "base"}},
    "dataset": {"pvc": {"claimName": "data", "path": "rows.jsonl"}},
}


def _spec(augmentation: dict | None) -> FineTuneJobSpec:
    dataset = {**ON_VOLUMES["dataset"], **({"augmentation": augmentation} if augmentation else {})}
    return FineTuneJobSpec.model_validate({**ON_VOLUMES, "dataset": dataset})


def test_a_hub_augmentation_model_gets_the_model_cache():
    assert trainer_model_storage(_spec(None), CACHED).cache_claim is None
    assert trainer_model_storage(_spec({"paraphrase": {}}), CACHED).cache_claim is None  # the base model's folder
    hub = {"paraphrase": {"model": {"name": "Qwen/Qwen2.5-0.5B-Instruct"}}}
    assert trainer_model_storage(_spec(hub), CACHED).cache_claim == "models-cache"
