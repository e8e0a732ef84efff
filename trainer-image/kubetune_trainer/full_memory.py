"""Will full fine-tuning fit? An estimate of one training process's memory, checked before the model is loaded.

Full fine-tuning keeps, on every GPU (data parallel replicates the model, so more GPUs do not help): fp32 master
weights (4 bytes per parameter), their gradients (4), the optimizer state (8 for AdamW's two moments, 2 for 8-bit
Adam, about 0 for Adafactor and plain SGD), the activations of one micro-batch, and the fp32 logits with their
gradient. Activations follow Korthikanti et al. 2022 (about 34 bytes x sequence x batch x hidden per layer in 16-bit,
attention scores not materialised by SDPA); with gradient checkpointing only each layer's input is kept, plus one
layer's activations during its recomputation. It is an estimate to refuse runs that cannot fit, not a prediction to
the byte: the trainer logs it either way.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from kubetune.api import FineTuneJobSpec

from .configs import resolve_gradient_checkpointing
from .device import DeviceInfo, resolve_precision
from .errors import InvalidInputError
from .model_loading import ModelLocation

log = logging.getLogger(__name__)

GIB = 1024**3
WEIGHT_BYTES = 4  # fp32 master weights; bf16/fp16 only inside autocast
OPTIMIZER_STATE_BYTES = {
    "adamw_torch": 8,
    "adamw_torch_fused": 8,
    "paged_adamw_32bit": 8,
    "adamw_8bit": 2,
    "paged_adamw_8bit": 2,
    "adafactor": 0,
    "sgd": 0,
}
ACTIVATION_BYTES_PER_TOKEN_HIDDEN = 34
RUNTIME_OVERHEAD_BYTES = GIB // 2  # CUDA context, allocator fragmentation, kernels' workspaces
_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs to know about a model, read from its config without loading weights."""

    parameters: int
    layers: int
    hidden: int
    vocab: int


@dataclass(frozen=True)
class MemoryEstimate:
    parameters: int
    weights: int
    gradients: int
    optimizer: int
    activations: int
    logits: int
    overhead: int = RUNTIME_OVERHEAD_BYTES

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.logits + self.overhead

    def describe(self, optimizer: str) -> str:
        return (
            f"about {gib(self.total)} ({self.parameters / 1e6:.1f}M parameters: weights {gib(self.weights)} fp32, "
            f"gradients {gib(self.gradients)}, {optimizer} state {gib(self.optimizer)}, activations "
            f"{gib(self.activations)}, logits {gib(self.logits)}, runtime {gib(self.overhead)})"
        )


def gib(size: int) -> str:
    return f"{size / GIB:.1f} GiB"


def model_shape(path: str, **kwargs) -> ModelShape:
    """Parameter count and dimensions from config.json alone (the model is built on the meta device)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path, **kwargs)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=kwargs.get("trust_remote_code", False))
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return ModelShape(
        parameters=sum(parameter.numel() for parameter in model.parameters()),
        layers=int(text.num_hidden_layers),
        hidden=int(text.hidden_size),
        vocab=int(text.vocab_size),
    )


def estimate_full_training(shape: ModelShape, spec: FineTuneJobSpec, activation_bytes: int) -> MemoryEstimate:
    """Memory of one process; `activation_bytes` is 2 under bf16/fp16 autocast, 4 in fp32."""
    training = spec.training
    tokens = training.batch_size * training.max_seq_length
    per_layer = ACTIVATION_BYTES_PER_TOKEN_HIDDEN * tokens * shape.hidden * activation_bytes // 2
    if training.gradient_checkpointing:
        activations = shape.layers * tokens * shape.hidden * activation_bytes + per_layer
    else:
        activations = shape.layers * per_layer
    return MemoryEstimate(
        parameters=shape.parameters,
        weights=shape.parameters * WEIGHT_BYTES,
        gradients=shape.parameters * WEIGHT_BYTES,
        optimizer=shape.parameters * OPTIMIZER_STATE_BYTES[training.optimizer],
        activations=activations,
        logits=2 * tokens * shape.vocab * 4,
    )


def host_memory_limit(cgroup_root: Path = Path("/sys/fs/cgroup"), meminfo: Path = Path("/proc/meminfo")) -> int:
    """The container's memory limit (cgroup v2 memory.max, v1 limit_in_bytes), else the machine's total memory."""
    for name in ("memory.max", "memory/memory.limit_in_bytes"):
        try:
            text = (cgroup_root / name).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:
            return int(text)
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no MemTotal in {meminfo}")


def check_full_training_fits(estimate: MemoryEstimate, available: int, where: str, spec: FineTuneJobSpec) -> None:
    """Refuse (InvalidInput, exit 64) with the numbers and what to change when the estimate exceeds `available`."""
    needed = estimate.describe(spec.training.optimizer)
    if estimate.total <= available:
        log.info("method full: needs %s; %s has %s", needed, where, gib(available))
        return
    gpus = spec.resources.gpus
    more_gpus = f" (each of the {gpus} GPUs holds a whole copy: more GPUs do not help)" if gpus > 1 else ""
    raise InvalidInputError(
        f"method full: training this model needs {needed} per process, but {where} has {gib(available)}{more_gpus}. "
        "Use method lora or qlora, a smaller baseModel, a GPU with more memory, training.optimizer adamw_8bit or "
        "adafactor, training.gradientCheckpointing: true, or a lower training.batchSize / maxSeqLength"
    )


def check_full_training_memory(spec: FineTuneJobSpec, location: ModelLocation, device: DeviceInfo) -> None:
    """The estimate for this model and spec against one GPU's memory, or the container's on CPU."""
    precision = resolve_precision(spec.training.precision, device)
    # An empty gradientCheckpointing is decided by the device (on for GPUs): estimate what will run.
    checkpointing = resolve_gradient_checkpointing(spec, device)
    spec = spec.model_copy(
        update={"training": spec.training.model_copy(update={"gradient_checkpointing": checkpointing})}
    )
    estimate = estimate_full_training(model_shape(location.path, **location.kwargs()), spec, _BYTES[precision])
    if device.is_cuda:
        import torch

        available = torch.cuda.get_device_properties(int(os.environ.get("LOCAL_RANK", "0"))).total_memory
        where = f"one {device.name} GPU"
    else:
        available, where = host_memory_limit(), "the container (CPU training)"
    check_full_training_fits(estimate, available, where, spec)
