"""Which inference engine a ModelServe runs, and the vLLM engine's settings.

The transformers engine (kubetune's own continuous batching on transformers + PEFT) runs anywhere and any
architecture transformers loads; vLLM (paged KV cache, CUDA graphs, batched multi-LoRA kernels) is several times
faster on GPUs for the architectures it supports and needs its own image.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import ApiModel

EngineName = Literal["transformers", "vllm", "auto"]
ENGINE_TRANSFORMERS = "transformers"
ENGINE_VLLM = "vllm"
ENGINE_AUTO = "auto"


class VllmSpec(ApiModel):
    """Settings of the vLLM engine (ignored by the transformers engine)."""

    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    """Fraction of each GPU's memory vLLM may take for weights, activations and its paged KV cache."""

    max_model_len: int | None = Field(default=None, ge=16, le=1048576)
    """Longest prompt + completion in tokens; empty takes the model's context length (a smaller one leaves more
    KV cache for concurrent requests)."""

    max_lora_rank: int = Field(default=64, ge=1, le=512)
    """Largest LoRA rank among the adapters (vLLM sizes its LoRA buffers by it); an adapter above it is refused."""

    max_loras: int = Field(default=8, ge=1, le=256)
    """Adapters resident on the GPU at once; others wait in CPU memory and swap in when requested."""

    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    """Weights and activations: `auto` takes the model's half precision on GPUs and float32 on CPU (as the
    transformers engine does)."""

    enforce_eager: bool = False
    """Skip CUDA-graph capture: a faster start (seconds instead of a minute or more) for slower decoding."""

    startup_seconds: int = Field(default=900, ge=60, le=7200)
    """How long a replica may take to load the model, profile memory and capture CUDA graphs before Kubernetes
    restarts it (the startup probe's budget)."""


def resolve_engine(engine: str, gpus: int) -> str:
    """The engine (image) a ModelServe runs: `auto` is vLLM on GPUs, where the server then checks the
    architecture and falls back to transformers for one vLLM lacks; on CPU it is transformers."""
    if engine == ENGINE_AUTO:
        return ENGINE_VLLM if gpus > 0 else ENGINE_TRANSFORMERS
    return engine
