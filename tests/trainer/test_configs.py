"""The spec -> SFTConfig / LoraConfig / BitsAndBytesConfig mapping, field by field."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from kubetune.api import FineTuneJobSpec
from kubetune_trainer.configs import build_configs
from kubetune_trainer.device import DeviceInfo, cgroup_cpu_limit, cpu_thread_count, resolve_precision
from kubetune_trainer.errors import InvalidInputError

CPU = DeviceInfo(kind="cpu")
AMPERE = DeviceInfo(kind="cuda", bf16_supported=True, name="NVIDIA A100")
TURING = DeviceInfo(kind="cuda", bf16_supported=False, name="Tesla T4")

TRAINING = {
    "epochs": 2.5,
    "maxSteps": 77,
    "learningRate": 1e-4,
    "batchSize": 3,
    "gradientAccumulationSteps": 5,
    "maxSeqLength": 640,
    "warmupRatio": 0.07,
    "scheduler": "constant_with_warmup",
    "optimizer": "adafactor",
    "weightDecay": 0.01,
    "maxGradNorm": 0.3,
    "seed": 1234,
    "gradientCheckpointing": True,
    "packing": True,
    "completionOnlyLoss": False,
    "evalSteps": 11,
    "saveSteps": 13,
    "saveTotalLimit": 4,
    "loggingSteps": 2,
}


def spec(**overrides) -> FineTuneJobSpec:
    wire = {
        "baseModel": {"name": "org/model"},
        "dataset": {"url": "https://example.com/data.jsonl"},
        "training": TRAINING,
        "lora": {
            "r": 8,
            "alpha": 24,
            "dropout": 0.1,
            "targetModules": ["q_proj", "v_proj"],
            "bias": "lora_only",
            "layersToTransform": [2, 3],
        },
    }
    wire.update(overrides)
    return FineTuneJobSpec.model_validate(wire)


@pytest.fixture(autouse=True)
def pretend_gpu_bf16(monkeypatch):
    """TrainingArguments checks the real hardware for bf16; these tests describe GPUs this CPU host lacks."""
    monkeypatch.setattr("transformers.training_args.is_torch_bf16_gpu_available", lambda: True)


@pytest.fixture(scope="module")
def mapped():
    return build_configs(spec(), checkpoints_dir=Path("/out/checkpoints"), device=CPU, has_eval=True)


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("output_dir", "/out/checkpoints"),
        ("num_train_epochs", 2.5),
        ("max_steps", 77),
        ("learning_rate", 1e-4),
        ("per_device_train_batch_size", 3),
        ("per_device_eval_batch_size", 3),
        ("gradient_accumulation_steps", 5),
        ("max_length", 640),
        ("warmup_steps", 0.07),
        ("lr_scheduler_type", "constant_with_warmup"),
        ("optim", "adafactor"),
        ("weight_decay", 0.01),
        ("max_grad_norm", 0.3),
        ("seed", 1234),
        ("data_seed", 1234),
        ("activation_checkpointing", True),
        ("gradient_checkpointing", True),
        ("packing", True),
        ("padding_free", False),
        ("completion_only_loss", False),
        ("eval_strategy", "steps"),
        ("eval_steps", 11),
        ("save_strategy", "steps"),
        ("save_steps", 13),
        ("save_total_limit", 4),
        ("logging_steps", 2),
        ("report_to", ["tensorboard"]),
        ("use_cpu", True),
        ("bf16", False),
        ("fp16", False),
        ("load_best_model_at_end", False),
    ],
)
def test_sft_config_field(mapped, field: str, expected):
    value = getattr(mapped.sft, field)
    value = getattr(value, "value", value)  # enums (scheduler, optimizer, strategies) compare by value
    if field == "report_to" and value == "none":
        value = []
    assert value == expected


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("r", 8),
        ("lora_alpha", 24),
        ("lora_dropout", 0.1),
        ("target_modules", {"q_proj", "v_proj"}),
        ("bias", "lora_only"),
        ("layers_to_transform", [2, 3]),
        ("task_type", "CAUSAL_LM"),
    ],
)
def test_lora_config_field(mapped, field: str, expected):
    assert getattr(mapped.lora, field) == expected


def test_lora_all_linear_is_passed_as_peft_keyword():
    configs = build_configs(
        spec(lora={"targetModules": ["all-linear"]}), checkpoints_dir="/o", device=CPU, has_eval=False
    )
    assert configs.lora.target_modules == "all-linear"


def test_defaults_are_the_tutorial_recipe_with_completion_only_loss():
    configs = build_configs(
        FineTuneJobSpec.model_validate({"baseModel": {"name": "o/m"}, "dataset": {"url": "https://e.x/d.jsonl"}}),
        checkpoints_dir="/o",
        device=AMPERE,
        has_eval=True,
    )
    sft = configs.sft
    assert (sft.num_train_epochs, sft.learning_rate, sft.per_device_train_batch_size) == (3, 2e-4, 4)
    assert (sft.gradient_accumulation_steps, sft.max_length, sft.save_total_limit) == (4, 512, 3)
    assert sft.completion_only_loss is True and sft.packing is False and sft.max_steps == -1
    assert sft.activation_checkpointing is True and configs.gradient_checkpointing, "on for GPU training by default"
    assert sft.load_best_model_at_end is False and sft.use_liger_kernel is False and sft.neftune_noise_alpha is None
    assert configs.lora.use_rslora is False and configs.lora.use_dora is False
    assert sft.eval_strategy.value == "epoch", "no evalSteps: evaluate once per epoch"
    assert (configs.lora.r, configs.lora.lora_alpha, configs.lora.lora_dropout) == (16, 32, 0.05)
    assert configs.quantization is None


def test_no_eval_rows_means_no_evaluation(mapped):
    configs = build_configs(spec(), checkpoints_dir="/o", device=CPU, has_eval=False)
    assert configs.sft.eval_strategy.value == "no"


def test_padding_free_leaves_truncation_to_the_trainer_step():
    training = {**TRAINING, "packing": False, "paddingFree": True}
    configs = build_configs(spec(training=training), checkpoints_dir="/o", device=CPU, has_eval=False)
    assert configs.sft.padding_free is True and configs.sft.max_length is None
    assert configs.sft.activation_checkpointing is True


@pytest.mark.parametrize(
    ("device", "precision", "bf16", "fp16", "use_cpu"),
    [(AMPERE, "bf16", True, False, False), (TURING, "fp16", False, True, False), (CPU, "fp32", False, False, True)],
)
def test_auto_precision_follows_the_hardware(device, precision, bf16, fp16, use_cpu):
    training = {**TRAINING, "precision": "auto", "gradientCheckpointing": False}
    configs = build_configs(spec(training=training), checkpoints_dir="/o", device=device, has_eval=False)
    assert configs.precision == precision
    assert (configs.sft.bf16, configs.sft.fp16, configs.sft.use_cpu) == (bf16, fp16, use_cpu)


def test_explicit_precision_the_hardware_lacks_is_a_clear_error():
    with pytest.raises(InvalidInputError, match=r"training\.precision: 'fp16' needs a CUDA GPU"):
        resolve_precision("fp16", CPU)
    with pytest.raises(InvalidInputError, match="'bf16' is not supported by Tesla T4"):
        resolve_precision("bf16", TURING)
    assert resolve_precision("fp32", AMPERE) == "fp32"


def test_qlora_maps_to_4bit_bitsandbytes():
    qlora = spec(method="qlora", quantization={"bits": 4, "type": "fp4", "doubleQuant": False})
    bnb = build_configs(qlora, checkpoints_dir="/o", device=AMPERE, has_eval=False).quantization
    assert bnb.load_in_4bit and not bnb.load_in_8bit
    assert bnb.bnb_4bit_quant_type == "fp4"
    assert bnb.bnb_4bit_use_double_quant is False
    assert bnb.bnb_4bit_compute_dtype == torch.bfloat16


def test_qlora_compute_dtype_falls_back_to_fp16_without_bf16():
    qlora = spec(method="qlora", quantization={"bits": 4})
    bnb = build_configs(qlora, checkpoints_dir="/o", device=TURING, has_eval=False).quantization
    assert bnb.bnb_4bit_use_double_quant is True and bnb.bnb_4bit_quant_type == "nf4"
    assert bnb.bnb_4bit_compute_dtype == torch.float16


def test_8bit_quantization():
    bnb = build_configs(
        spec(method="qlora", quantization={"bits": 8}), checkpoints_dir="/o", device=AMPERE, has_eval=False
    ).quantization
    assert bnb.load_in_8bit and not bnb.load_in_4bit


def test_cpu_threads_prefer_omp_then_cgroup_limit(tmp_path: Path):
    assert cpu_thread_count({"OMP_NUM_THREADS": "3"}, tmp_path) == 3
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1
    assert cpu_thread_count({}, tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    import os

    available = len(os.sched_getaffinity(0))
    assert cpu_thread_count({}, tmp_path) == available
    assert cpu_thread_count({}, tmp_path, processes=available * 2) == 1


def _minimal(**spec_overrides) -> FineTuneJobSpec:
    wire = {"baseModel": {"name": "o/m"}, "dataset": {"url": "https://e.x/d.jsonl"}, **spec_overrides}
    return FineTuneJobSpec.model_validate(wire)


@pytest.mark.parametrize(
    ("method", "device", "expected"),
    [("lora", CPU, False), ("lora", AMPERE, True), ("qlora", AMPERE, True), ("qlora", TURING, True)],
)
def test_gradient_checkpointing_by_default_on_gpus_only(method: str, device: DeviceInfo, expected: bool):
    extra = {"quantization": {"bits": 4}} if method == "qlora" else {}
    configs = build_configs(_minimal(method=method, **extra), checkpoints_dir="/o", device=device, has_eval=False)
    assert configs.gradient_checkpointing is expected and configs.sft.activation_checkpointing is expected


@pytest.mark.parametrize("explicit", [True, False])
def test_an_explicit_gradient_checkpointing_wins_on_any_device(explicit: bool):
    for device in (CPU, AMPERE):
        spec = _minimal(training={"gradientCheckpointing": explicit})
        assert (
            build_configs(spec, checkpoints_dir="/o", device=device, has_eval=False).gradient_checkpointing is explicit
        )


def test_rslora_and_dora_reach_the_lora_config():
    configs = build_configs(
        _minimal(lora={"rslora": True, "dora": True}), checkpoints_dir="/o", device=CPU, has_eval=False
    )
    assert configs.lora.use_rslora is True and configs.lora.use_dora is True


def test_neftune_reaches_the_sft_config():
    configs = build_configs(
        _minimal(training={"neftuneNoiseAlpha": 5}), checkpoints_dir="/o", device=CPU, has_eval=False
    )
    assert configs.sft.neftune_noise_alpha == 5


def test_liger_kernel_reaches_the_sft_config_on_a_gpu(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(  # the kernels are a GPU image package; the mapping is what is tested here
        importlib.util, "find_spec", lambda name, *a: object() if name == "liger_kernel" else real_find_spec(name, *a)
    )
    configs = build_configs(
        _minimal(training={"ligerKernel": True}), checkpoints_dir="/o", device=AMPERE, has_eval=False
    )
    assert configs.sft.use_liger_kernel is True


def test_liger_kernel_on_cpu_is_refused_before_loading():
    with pytest.raises(InvalidInputError, match=r"training.ligerKernel needs a GPU"):
        build_configs(_minimal(training={"ligerKernel": True}), checkpoints_dir="/o", device=CPU, has_eval=False)


def test_load_best_model_at_end_keeps_the_lowest_eval_loss():
    training = {"loadBestModelAtEnd": True, "evalSteps": 10, "saveSteps": 20}
    configs = build_configs(_minimal(training=training), checkpoints_dir="/o", device=CPU, has_eval=True)
    sft = configs.sft
    assert sft.load_best_model_at_end is True and sft.metric_for_best_model == "eval_loss"
    assert sft.greater_is_better is False
    no_eval = build_configs(_minimal(training=training), checkpoints_dir="/o", device=CPU, has_eval=False)
    assert no_eval.sft.load_best_model_at_end is False, "no evaluation rows: the last checkpoint is all there is"
