"""Keep bitsandbytes 4-bit layers in their training layout on CPUs with AVX512-BF16/AMX (QLoRA on CPU).

Why: bitsandbytes 0.50 has a fast CPU inference path for `Linear4bit`. On a CPU where
`bitsandbytes.functional.has_avx512bf16()` is true (Sapphire Rapids, Zen 4 and later), `Linear4bit.forward`
repacks the layer's weight *in place* into a bf16 inference layout (`_convert_weight_packed_for_cpu`, which sets
`quant_state.packing_format_for_cpu`) the first time it runs in eval mode on an input without gradients. Nothing
undoes that at `model.train()`: from then on `matmul_4bit` sends the layer to `F.gemv_4bit`, a custom op with no
autograd kernel. torch only warns ("bitsandbytes::gemv_4bit: an autograd kernel was not registered ...") and
drops the gradient through the frozen base weight, so every LoRA layer below it trains on wrong gradients.

The Trainer's evaluation (`eval_strategy`) is exactly such a forward, so any CPU QLoRA job with evaluation on
those CPUs silently degraded after its first evaluation (the 16-fact test: eval loss 1.10 instead of 0.06).

The fix turns that per-layer feature off for the model being trained. `support_avx512bf16_for_cpu` is the
public attribute each `Linear4bit` sets from `has_avx512bf16()` in its constructor and reads in `forward`; with
it off, every forward (training and evaluation) takes the ordinary `MatMul4Bit` path, which has a backward.
Preventing the repack is preferred to undoing it after each evaluation: the inverse conversion
(`_convert_weight_packed_for_cpu_inverse`) is private and re-quantizes double-quantized scales only
approximately. Only the model being trained is changed: the published adapter holds LoRA weights only, and a
base model loaded again for serving builds new layers that keep the fast inference layout.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

# The attribute of `bitsandbytes.nn.Linear4bit` (0.48+) that enables the in-place CPU inference repack.
CPU_INFERENCE_REPACK_FLAG = "support_avx512bf16_for_cpu"


def keep_4bit_training_layout(model: torch.nn.Module) -> int:
    """Stop every bitsandbytes `Linear4bit` of `model` from repacking itself for CPU inference; returns how
    many layers had the repack enabled (0 on CPUs without AVX512-BF16; on GPUs the flag is never read).

    Call it right after loading, before any forward pass has had a chance to repack a layer."""
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:  # no bitsandbytes: no 4-bit layers
        return 0
    disabled = 0
    for module in model.modules():
        if isinstance(module, Linear4bit) and getattr(module, CPU_INFERENCE_REPACK_FLAG, False):
            setattr(module, CPU_INFERENCE_REPACK_FLAG, False)
            disabled += 1
    if disabled:
        log.info("kept %d 4-bit layers in the training layout (CPU bf16 inference repack off)", disabled)
    return disabled
