"""Defaults follow the tutorial's recipe, so a minimal FineTuneJob trains the way users expect."""

from __future__ import annotations

import pytest
from kubetune.api import DEFAULT_TARGET_MODULES, FineTuneJobSpec, ModelServeSpec

FTJ_DEFAULTS = [
    ("method", "lora"),
    ("lora.r", 16),
    ("lora.alpha", 32),
    ("lora.dropout", 0.05),
    ("lora.target_modules", DEFAULT_TARGET_MODULES),
    ("lora.bias", "none"),
    ("training.epochs", 3),
    ("training.learning_rate", 2e-4),
    ("training.batch_size", 4),
    ("training.gradient_accumulation_steps", 4),
    ("training.max_seq_length", 512),
    ("training.warmup_ratio", 0.03),
    ("training.scheduler", "cosine"),
    ("training.optimizer", "adamw_torch"),
    ("training.precision", "auto"),
    ("training.completion_only_loss", True),
    ("training.save_steps", 100),
    ("training.seed", 42),
    ("dataset.eval_fraction", 0.1),
    ("dataset.format", None),
    ("resources.gpus", 1),
    ("resources.gpu_resource_name", "nvidia.com/gpu"),
    ("output.storage_size", "10Gi"),
    ("output.access_mode", "ReadWriteOnce"),
    ("output.keep", False),
    ("backoff_limit", 2),
    ("suspend", False),
    ("quantization", None),
]


def _get(obj: object, dotted: str) -> object:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize(("field", "expected"), FTJ_DEFAULTS, ids=[f for f, _ in FTJ_DEFAULTS])
def test_finetunejob_defaults(ftj_spec: dict, field: str, expected: object) -> None:
    assert _get(FineTuneJobSpec.model_validate(ftj_spec), field) == expected


def test_qlora_quantization_defaults(ftj_spec: dict) -> None:
    spec = FineTuneJobSpec.model_validate({**ftj_spec, "method": "qlora", "quantization": {}})
    assert spec.quantization is not None
    assert (spec.quantization.bits, spec.quantization.type) == (4, "nf4")
    assert spec.quantization.double_quant is True
    assert spec.quantization.compute_dtype == "bfloat16"


def test_modelserve_defaults(msv_spec: dict) -> None:
    spec = ModelServeSpec.model_validate(msv_spec)
    assert spec.replicas == 1
    assert spec.service.port == 8000 and spec.service.type == "ClusterIP"
    assert spec.generation.max_new_tokens == 256
    assert spec.generation.max_new_tokens_limit == 2048
    assert spec.merge_adapter is False


def test_wire_round_trip_is_camel_case(ftj_spec: dict) -> None:
    spec = FineTuneJobSpec.model_validate(ftj_spec)
    wire = spec.to_wire()
    assert wire["training"]["learningRate"] == 2e-4
    assert wire["dataset"]["configMap"] == {"name": "data", "key": "rows.jsonl"}
    assert FineTuneJobSpec.model_validate(wire) == spec


def test_cpu_quantity_accepts_integers(ftj_spec: dict) -> None:
    spec = FineTuneJobSpec.model_validate({**ftj_spec, "resources": {"cpu": 4, "memory": "16Gi"}})
    assert spec.resources.cpu == "4"
    assert spec.resources.memory == "16Gi"


def test_relative_paths_are_normalised(ftj_spec: dict) -> None:
    spec = FineTuneJobSpec.model_validate(
        {**ftj_spec, "dataset": {"pvc": {"claimName": "data", "path": "sets/medical/"}}}
    )
    assert spec.dataset.pvc is not None and spec.dataset.pvc.path == "sets/medical"
