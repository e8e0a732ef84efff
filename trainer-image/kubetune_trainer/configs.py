"""The one mapping from a FineTuneJob spec to trl/peft/bitsandbytes configuration objects.

Everything the spec says about optimisation, adapters and quantization is translated here and nowhere
else, so the mapping can be read (and tested) as one table.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

from kubetune.api import ALL_LINEAR, FineTuneJobSpec, QuantizationSpec
from kubetune.quantization import bitsandbytes_config
from peft import LoraConfig, TaskType
from transformers import BitsAndBytesConfig
from trl import SFTConfig

from .device import DeviceInfo, ResolvedPrecision, resolve_precision
from .errors import InvalidInputError
from .tracking import run_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainerConfigs:
    """What `build_configs` returns: the trainer, adapter (None for method full) and (QLoRA only) quantization
    configs."""

    sft: SFTConfig
    lora: LoraConfig | None
    quantization: BitsAndBytesConfig | None
    precision: ResolvedPrecision
    gradient_checkpointing: bool


def resolve_gradient_checkpointing(spec: FineTuneJobSpec, device: DeviceInfo) -> bool:
    """training.gradientCheckpointing, or when empty: on for GPU training, where activations limit batch size and
    sequence length (TRL's and PEFT's QLoRA recipe turn it on), off on CPU, where it only adds time (+18%)."""
    if spec.training.gradient_checkpointing is not None:
        return spec.training.gradient_checkpointing
    return device.is_cuda


def check_device_features(spec: FineTuneJobSpec, device: DeviceInfo) -> None:
    """Features the device cannot run are refused before the model loads (exit 64), not deep inside training."""
    if not spec.training.liger_kernel:
        return
    if not device.is_cuda:
        raise InvalidInputError(
            "training.ligerKernel needs a GPU: Liger's kernels are Triton kernels for CUDA/ROCm devices "
            f"(this trainer runs on {device.name}); set it false or request resources.gpus"
        )
    if importlib.util.find_spec("liger_kernel") is None:
        raise InvalidInputError(
            "training.ligerKernel: this trainer image lacks the liger-kernel package (pip install 'kubetune[gpu]' "
            "adds it); set it false or use an image that has it"
        )


def build_configs(
    spec: FineTuneJobSpec, *, checkpoints_dir: Path | str, device: DeviceInfo, has_eval: bool
) -> TrainerConfigs:
    """Translate `spec` into SFTConfig, LoraConfig and BitsAndBytesConfig (None for plain LoRA)."""
    training = spec.training
    precision = resolve_precision(training.precision, device)
    check_device_features(spec, device)
    checkpointing = resolve_gradient_checkpointing(spec, device)
    if training.early_stopping is not None and not has_eval:
        raise InvalidInputError(
            "training.earlyStopping needs evaluation rows, but this dataset has none: set dataset.evalFraction "
            "above 0 (or dataset.evalSplit), or remove earlyStopping"
        )
    # Early stopping publishes the best checkpoint: it implies loadBestModelAtEnd.
    load_best = (training.load_best_model_at_end or training.early_stopping is not None) and has_eval
    # trl refuses max_length with padding-free batches (it cannot truncate them); the tokenized rows are cut
    # to maxSeqLength after trl prepares them instead (sft_trainer.truncate_tokenized), so the limit still holds.
    max_length = None if training.padding_free else training.max_seq_length
    eval_strategy = "no"
    if has_eval:
        eval_strategy = "steps" if training.eval_steps else "epoch"
    sft = SFTConfig(
        output_dir=str(checkpoints_dir),
        num_train_epochs=training.epochs,
        max_steps=training.max_steps or -1,
        learning_rate=training.learning_rate,
        per_device_train_batch_size=training.batch_size,
        per_device_eval_batch_size=training.batch_size,
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        max_length=max_length,
        warmup_steps=training.warmup_ratio,  # transformers v5: a float below 1 is a ratio of the total steps
        lr_scheduler_type=training.scheduler,
        optim=training.optimizer,
        weight_decay=training.weight_decay,
        max_grad_norm=training.max_grad_norm,
        seed=training.seed,
        data_seed=training.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not device.is_cuda,
        # transformers v5 name of gradient checkpointing; setting it overrides trl's default of True.
        activation_checkpointing=checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
        packing=training.packing,
        padding_free=training.padding_free,
        completion_only_loss=training.completion_only_loss,
        eval_strategy=eval_strategy,
        eval_steps=training.eval_steps if has_eval else None,
        save_strategy="steps",
        save_steps=training.save_steps,
        save_total_limit=training.save_total_limit,
        logging_strategy="steps",
        logging_steps=training.logging_steps,
        logging_first_step=True,
        report_to=spec.tracking.report_to() or "none",
        run_name=run_name(),
        disable_tqdm=True,
        dataloader_pin_memory=device.is_cuda,
        ddp_find_unused_parameters=False,
        load_best_model_at_end=load_best,
        metric_for_best_model="eval_loss" if load_best else None,
        greater_is_better=False if load_best else None,
        use_liger_kernel=training.liger_kernel,
        neftune_noise_alpha=training.neftune_noise_alpha,
    )
    lora = None if spec.method == "full" else build_lora_config(spec)
    quantization = None
    if spec.method == "qlora":
        assert spec.quantization is not None  # the API enforces it for qlora
        quantization = build_quantization_config(spec.quantization, device)
    return TrainerConfigs(
        sft=sft, lora=lora, quantization=quantization, precision=precision, gradient_checkpointing=checkpointing
    )


def build_lora_config(spec: FineTuneJobSpec) -> LoraConfig:
    return LoraConfig(
        r=spec.lora.r,
        lora_alpha=spec.lora.alpha,
        lora_dropout=spec.lora.dropout,
        target_modules=ALL_LINEAR if spec.lora.target_modules == [ALL_LINEAR] else list(spec.lora.target_modules),
        bias=spec.lora.bias,
        layers_to_transform=spec.lora.layers_to_transform,
        use_rslora=spec.lora.rslora,
        use_dora=spec.lora.dora,
        task_type=TaskType.CAUSAL_LM,
    )


def build_quantization_config(spec: QuantizationSpec, device: DeviceInfo) -> BitsAndBytesConfig:
    """bitsandbytes loading of the frozen base (the shared mapping), warning when bf16 must become fp16."""
    bf16_ok = device.bf16_supported or not device.is_cuda
    if spec.compute_dtype == "bfloat16" and not bf16_ok:
        log.warning("quantization.computeDtype bfloat16 is not supported by %s: using float16", device.name)
    return bitsandbytes_config(spec, bf16_supported=bf16_ok)
