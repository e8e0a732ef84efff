"""method: full: the memory estimate and its refusal, and a full model folder that the server serves as its base."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from kubetune.api import FineTuneJobSpec
from kubetune.api.runtime import TrainerExit
from kubetune_trainer import full_memory
from kubetune_trainer.errors import InvalidInputError
from kubetune_trainer.full_memory import (
    GIB,
    ModelShape,
    check_full_training_fits,
    estimate_full_training,
    host_memory_limit,
    model_shape,
)
from pydantic import ValidationError

from tests.support.tiny_model import synthetic_facts
from tests.trainer.helpers import base_spec, fact_prompt, run_in_process, write_spec

WIRE = {"baseModel": {"name": "org/m"}, "dataset": {"url": "https://example.com/d.jsonl"}, "method": "full"}
# Qwen2.5-1.5B's shape: 1.54 B parameters, 28 layers, hidden 1536, vocabulary 151936.
QWEN_1_5B = ModelShape(parameters=1_543_714_304, layers=28, hidden=1536, vocab=151_936)


def spec(**training) -> FineTuneJobSpec:
    return FineTuneJobSpec.model_validate({**WIRE, "training": {"batchSize": 4, "maxSeqLength": 512, **training}})


def test_full_is_a_method_without_quantization_or_adapter():
    assert spec().method == "full"
    with pytest.raises(ValidationError, match="quantization is only allowed with method qlora"):
        FineTuneJobSpec.model_validate({**WIRE, "quantization": {"bits": 4}})
    from kubetune_trainer.configs import build_configs
    from kubetune_trainer.device import DeviceInfo

    configs = build_configs(spec(), checkpoints_dir=Path("/out/c"), device=DeviceInfo(kind="cpu"), has_eval=False)
    assert configs.lora is None and configs.quantization is None  # trl trains every weight


def test_the_estimate_counts_weights_gradients_optimizer_and_activations():
    adamw = estimate_full_training(QWEN_1_5B, spec(), activation_bytes=2)
    assert adamw.weights == adamw.gradients == QWEN_1_5B.parameters * 4
    assert adamw.optimizer == QWEN_1_5B.parameters * 8
    assert 25 * GIB < adamw.total < 40 * GIB  # 16 bytes x 1.54 B = 23 GiB, plus activations and logits
    eight_bit = estimate_full_training(QWEN_1_5B, spec(optimizer="adamw_8bit"), activation_bytes=2)
    assert adamw.total - eight_bit.total == QWEN_1_5B.parameters * 6
    checkpointed = estimate_full_training(QWEN_1_5B, spec(gradientCheckpointing=True), activation_bytes=2)
    assert checkpointed.activations < adamw.activations / 10


def test_a_model_that_cannot_fit_one_gpu_is_refused_with_the_numbers():
    estimate = estimate_full_training(QWEN_1_5B, spec(), activation_bytes=2)
    two_gpus = FineTuneJobSpec.model_validate({**WIRE, "resources": {"gpus": 2}})
    with pytest.raises(InvalidInputError) as refused:
        check_full_training_fits(estimate, 24 * GIB, "one NVIDIA L4 GPU", two_gpus)
    message = str(refused.value)
    assert f"needs about {estimate.total / GIB:.1f} GiB (1543.7M parameters" in message
    assert "one NVIDIA L4 GPU has 24.0 GiB" in message and "more GPUs do not help" in message
    assert "method lora or qlora" in message
    assert refused.value.exit_code == TrainerExit.INVALID_INPUT
    check_full_training_fits(estimate, 80 * GIB, "one NVIDIA A100 GPU", two_gpus)  # fits: no error


def test_host_memory_is_the_cgroup_limit_else_the_machine(tmp_path: Path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16384 kB\nMemFree: 1 kB\n")
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "memory.max").write_text("max\n")
    assert host_memory_limit(cgroup, meminfo) == 16384 * 1024
    (cgroup / "memory.max").write_text("2147483648\n")
    assert host_memory_limit(cgroup, meminfo) == 2 * GIB


def test_the_shape_is_read_from_config_alone(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM

    shape = model_shape(str(tiny_model_dir))
    loaded = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert shape.parameters == sum(parameter.numel() for parameter in loaded.parameters())
    assert (shape.layers, shape.hidden, shape.vocab) == (2, 128, loaded.config.vocab_size)


def test_the_trainer_refuses_before_loading_the_model(pvc_root: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(full_memory, "host_memory_limit", lambda: 64 * 1024**2)  # a 64 MiB container
    loaded = []
    monkeypatch.setattr("kubetune_trainer.flow.load_model", lambda *args, **kwargs: loaded.append(args))
    spec_path = write_spec(tmp_path, base_spec(method="full", tracking={"tensorboard": False}))
    assert run_in_process(spec_path, tmp_path / "out", pvc_root) == TrainerExit.INVALID_INPUT
    message = (tmp_path / "termination-log").read_text()
    assert "method full: training this model needs about" in message
    assert "the container (CPU training) has 0.1 GiB" in message
    assert loaded == []


@pytest.mark.slow
def test_a_fully_fine_tuned_model_is_served_as_a_base_and_answers(pvc_root: Path, tmp_path: Path):
    """Train every weight of the tiny model on the 16 facts, then serve the output folder as a ModelServe's base
    (no adapter) with the real server and ask it a fact over HTTP."""
    import httpx

    from tests.server.conftest import live_server, serve_config, write_serve_config

    training = {"maxSteps": 60, "learningRate": 1e-3, "loggingSteps": 20}
    review = {"humanEvalSamples": 2, "maxNewTokens": 6}
    spec = base_spec(method="full", training=training, tracking={"tensorboard": False}, evaluation=review)
    output = tmp_path / "volumes" / "out"
    assert run_in_process(write_spec(tmp_path, spec), output, pvc_root) == 0
    with (output / "human-eval.csv").open(encoding="utf-8", newline="") as handle:
        sheet = list(csv.DictReader(handle))
    # The base column is the original model, loaded again (it knows no fact), not the trained one.
    assert len(sheet) == 2 and all(row["base_answer"] != row["reference"] for row in sheet), sheet
    assert any(row["finetuned_answer"] == row["reference"] for row in sheet), sheet

    model_dir = output / "adapter"
    assert (model_dir / "config.json").is_file() and (model_dir / "model.safetensors").is_file()
    assert not (model_dir / "adapter_config.json").exists()
    manifest = json.loads((model_dir / "kubetune.json").read_text())
    assert manifest["method"] == "full"
    assert "Fully fine-tuned model for" in (model_dir / "README.md").read_text()

    config = serve_config({}, baseModel={"pvc": {"claimName": "out", "path": "adapter"}})
    config_path = write_serve_config(tmp_path / "serve.json", config)
    with live_server(config_path, tmp_path / "volumes") as (url, _app):
        answers = [
            httpx.post(
                f"{url}/v1/completions",
                json={"model": "base", "prompt": fact_prompt(fact.question), "max_tokens": 6, "temperature": 0},
                timeout=60,
            )
            .json()["choices"][0]["text"]
            .strip()
            for fact in synthetic_facts()
        ]
    correct = sum(answer == fact.answer for answer, fact in zip(answers, synthetic_facts(), strict=True))
    assert correct >= 14, answers  # 16 of 16 measured; the untrained tiny base answers 0
