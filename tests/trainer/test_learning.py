"""Learning is proven, not assumed: the base model fails the 16-fact task, LoRA and QLoRA adapters pass it
after a reload from disk, and the run leaves every promised output behind."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from kubetune.api import FineTuneJobSpec
from kubetune.api.runtime import ADAPTER_DIR, CHECKPOINTS_DIR, MANIFEST_FILE, METRICS_FILE, PROGRESS_FILE
from kubetune_trainer.checkpoints import COMPLETE_MARKER
from kubetune_trainer.manifest import spec_hash

from tests.trainer.helpers import (
    CPU_BF16_FEATURE,
    answer_scores,
    base_spec,
    count_correct,
    force_cpu_bf16_feature,
    load_adapted,
    load_base,
    run_in_process,
    write_spec,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lora_run(pvc_root: Path, tmp_path_factory) -> tuple[dict, Path, int]:
    work = tmp_path_factory.mktemp("lora")
    spec = base_spec(
        training={"saveSteps": 30, "saveTotalLimit": 2}, evaluation={"generationSamples": 4, "maxNewTokens": 4}
    )
    code = run_in_process(write_spec(work, spec), work / "output", pvc_root)
    return spec, work / "output", code


@pytest.fixture(scope="module", params=list(CPU_BF16_FEATURE.values()), ids=list(CPU_BF16_FEATURE))
def qlora_run(request, pvc_root: Path, tmp_path_factory) -> tuple[dict, Path, int]:
    """QLoRA training (with evaluations each epoch) with bitsandbytes' CPU bf16/AMX feature forced on and off:
    forced on, the evaluations used to repack the 4-bit layers into a layout with no backward."""
    work = tmp_path_factory.mktemp("qlora")
    spec = base_spec(method="qlora", quantization={"bits": 4, "type": "nf4", "computeDtype": "float32"})
    with pytest.MonkeyPatch.context() as monkeypatch:
        force_cpu_bf16_feature(monkeypatch, request.param)
        code = run_in_process(write_spec(work, spec), work / "output", pvc_root)
    return spec, work / "output", code


def test_the_base_model_cannot_answer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    assert count_correct(load_base(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)) == 0


def test_lora_adapter_learns_the_facts_after_reload(lora_run, tiny_model_dir: Path):
    _, output, code = lora_run
    assert code == 0
    model, tokenizer = load_adapted(tiny_model_dir, output / ADAPTER_DIR)
    assert count_correct(model, tokenizer) >= 15


def test_qlora_adapter_learns_the_facts_on_a_4bit_base(qlora_run, tiny_model_dir: Path):
    _, output, code = qlora_run
    assert code == 0
    config = json.loads((output / ADAPTER_DIR / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    metrics = json.loads((output / ADAPTER_DIR / METRICS_FILE).read_text())
    # The reload takes the real CPU's path (the fast bf16 inference layout where the CPU has AVX512-BF16/AMX).
    model, tokenizer = load_adapted(tiny_model_dir, output / ADAPTER_DIR, quantized=True)
    assert type(model.base_model.model.model.layers[0].self_attn.q_proj.base_layer).__name__ == "Linear4bit"
    assert count_correct(model, tokenizer) >= 15
    adapted = answer_scores(model, tokenizer)
    with model.disable_adapter():
        base = answer_scores(model, tokenizer)
    # Measured on an AMX CPU, identical with the feature forced on and off (the fix keeps training on one path):
    # eval loss 0.064; 16/16 correct; answer NLL 0.051 (base 5.73); mean logit margin +6.70 (base -2.44).
    # The reload's bf16 inference path moves NLL/margin only in the 3rd digit (0.0507 vs 0.0510 fp32).
    # With the bug (feature on, no fix): eval loss 1.10, 14/16, NLL 0.73, margin +4.35 (here the run now fails
    # earlier: the autograd warning is an error). Thresholds sit ~5x from the fixed run (2x for the margin) and
    # would fail the buggy one on eval loss and NLL too.
    assert metrics["evalLoss"] < 0.3
    assert adapted.mean_nll < 0.25
    assert base.mean_nll > 2.5
    assert adapted.mean_margin > 3.0
    assert base.mean_margin < 0


def test_adapter_folder_holds_weights_tokenizer_card_metrics_and_manifest(lora_run):
    spec, output, _ = lora_run
    adapter = output / ADAPTER_DIR
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "README.md"):
        assert (adapter / name).is_file(), name
    metrics = json.loads((adapter / METRICS_FILE).read_text())
    assert metrics["steps"] == 60
    assert metrics["evalLoss"] < 0.3 < metrics["trainLoss"]
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["evalLoss"]))
    assert metrics["trainTokens"] > 0 and metrics["tokensPerSecond"] > 0 and metrics["wallSeconds"] > 0
    assert metrics["peakMemoryBytes"] > 0
    assert metrics["rougeL"] > 0.9, "4 held-out answers generated and scored"
    assert 0 < metrics["bleu"] <= 1
    manifest = json.loads((adapter / MANIFEST_FILE).read_text())
    assert manifest["specHash"] == spec_hash(FineTuneJobSpec.model_validate(spec))
    assert manifest["datasetFingerprint"].startswith("sha256:")
    assert manifest["format"] == "alpaca" and "{instruction}" in manifest["promptTemplate"]
    assert manifest["baseModel"] == {"pvc": {"claimName": "models", "path": "tiny"}, "trustRemoteCode": False}
    assert {"torch", "transformers", "trl", "peft"} <= set(manifest["libraries"])
    assert manifest["completedAt"].endswith("Z")
    card = (adapter / "README.md").read_text()
    for section in ("library_name: peft", "## Training", "## Results", "## Usage", "PeftModel", "## Intended use"):
        assert section in card
    assert f"{metrics['evalLoss']:.4f}" in card


def test_progress_file_and_termination_message_report_the_end(lora_run):
    _, output, _ = lora_run
    report = json.loads((output / PROGRESS_FILE).read_text())
    assert report["progress"]["step"] == report["progress"]["totalSteps"] == 60
    assert report["progress"]["percent"] == 100
    assert report["metrics"]["steps"] == 60
    summary = json.loads((output.parent / "termination-log").read_text())
    assert summary["exitReason"] == "Succeeded"
    assert summary["adapterPath"] == str(output / ADAPTER_DIR)
    assert summary["metrics"]["evalLoss"] == report["metrics"]["evalLoss"]


def test_checkpoints_are_marked_complete_and_rotated(lora_run):
    _, output, _ = lora_run
    checkpoints = sorted(p.name for p in (output / CHECKPOINTS_DIR).glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-30", "checkpoint-60"]
    assert all((output / CHECKPOINTS_DIR / name / COMPLETE_MARKER).is_file() for name in checkpoints)
    assert not list(output.glob(".adapter*")), "no temporary adapter folder is left behind"


def test_a_finished_run_is_not_trained_again(lora_run, pvc_root: Path):
    spec, output, _ = lora_run
    weights = output / ADAPTER_DIR / "adapter_model.safetensors"
    before = weights.stat().st_mtime_ns
    assert run_in_process(write_spec(output.parent, spec), output, pvc_root) == 0
    assert weights.stat().st_mtime_ns == before
    assert json.loads((output.parent / "termination-log").read_text())["exitReason"] == "Succeeded"


def test_chat_data_learns_through_the_chat_template(pvc_root: Path, tiny_model_dir: Path, tmp_path: Path):
    spec = base_spec("facts-chat.jsonl")
    assert run_in_process(write_spec(tmp_path, spec), tmp_path / "output", pvc_root) == 0
    model, tokenizer = load_adapted(tiny_model_dir, tmp_path / "output" / ADAPTER_DIR)

    def chat_prompt(question: str) -> str:
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
        )

    assert count_correct(model, tokenizer, chat_prompt) >= 15


@pytest.mark.parametrize(
    ("data_file", "fmt", "training"),
    [
        ("facts-qa.jsonl", "qa", {}),
        ("facts-text.jsonl", "text", {}),
        ("facts.jsonl", "alpaca", {"paddingFree": True}),
        ("facts.jsonl", "alpaca", {"packing": True}),
        ("facts.jsonl", "alpaca", {"gradientCheckpointing": True}),
    ],
    ids=["qa", "text", "padding-free", "packing", "gradient-checkpointing"],
)
def test_other_formats_and_batching_modes_train_end_to_end(data_file, fmt, training, pvc_root: Path, tmp_path: Path):
    spec = base_spec(data_file, training={"maxSteps": 3, **training})
    assert run_in_process(write_spec(tmp_path, spec), tmp_path / "output", pvc_root) == 0
    manifest = json.loads((tmp_path / "output" / ADAPTER_DIR / MANIFEST_FILE).read_text())
    assert manifest["format"] == fmt and manifest["steps"] == 3
