"""How many KV-cache tokens fit in memory: per-token bytes from the model's config, and the budget a GPU's free
memory allows after the weights are loaded (the transformers engine's admission limit when kvCacheTokens is
not set)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

GPU_KV_FRACTION = 0.8
"""Share of the free GPU memory (after loading) the KV cache may take; the rest holds the activations of one
step (bounded by maxStepTokens), the one layer a merge or trim copies at a time, and allocator slack."""


def kv_bytes_per_token(model_config: Mapping, dtype: torch.dtype) -> int:
    """Bytes of K and V one token takes over all layers."""
    heads = model_config.get("num_attention_heads") or 1
    kv_heads = model_config.get("num_key_value_heads") or heads
    head_dim = model_config.get("head_dim") or (model_config.get("hidden_size", 0) // heads)
    layers = model_config.get("num_hidden_layers") or 1
    return 2 * layers * kv_heads * head_dim * torch.tensor([], dtype=dtype).element_size()


def tokens_for_memory(free_bytes: int, per_token: int, fraction: float = GPU_KV_FRACTION) -> int:
    """KV tokens that fit in `fraction` of `free_bytes` (at least 1)."""
    return max(1, int(free_bytes * fraction) // max(1, per_token))


def gpu_kv_budget(model, device: str) -> int | None:
    """The KV-token budget of a model just loaded on a CUDA device; None elsewhere (CPU memory is not measured)."""
    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        return None
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return tokens_for_memory(free, kv_bytes_per_token(config.to_dict(), model.dtype))
