"""One mapping from the API's QuantizationSpec to bitsandbytes loading, shared by the trainer and the server.

torch and transformers are imported when called, so the operator (which imports nothing of ML) can ship
the same package.
"""

from __future__ import annotations

from typing import Any

from kubetune.api import QuantizationSpec


def compute_dtype(spec: QuantizationSpec, bf16_supported: bool) -> Any:
    """The spec's compute dtype; bfloat16 falls back to float16 where the GPU has no bf16 (it would fail)."""
    import torch

    if spec.compute_dtype == "bfloat16" and not bf16_supported:
        return torch.float16
    return getattr(torch, spec.compute_dtype)


def bitsandbytes_config(spec: QuantizationSpec, bf16_supported: bool) -> Any:
    """4-bit (nf4/fp4, optional double quantization) or 8-bit loading of a frozen base model."""
    from transformers import BitsAndBytesConfig

    if spec.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=spec.type,
        bnb_4bit_use_double_quant=spec.double_quant,
        bnb_4bit_compute_dtype=compute_dtype(spec, bf16_supported),
    )
