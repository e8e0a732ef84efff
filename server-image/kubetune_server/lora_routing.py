"""Which adapter each row of the next forward uses, applied to PEFT's LoRA layers without per-step set-up.

PEFT's `adapter_names=` argument registers and removes a hook on every LoRA layer at every forward, and its
layer forward does several checks per call; on a small model that costs as much as the forward itself. Here
each LoRA layer is set up once, when an adapter loads: plain `Linear` layers get a lean forward (base output
plus B·A·x·scale for the one adapter of a uniform batch, PEFT's own mixed-batch path for a mix), and any other
LoRA layer (quantized, embedding, DoRA) a pre-hook that passes the per-row names to PEFT's forward.
"""

from __future__ import annotations

import torch.nn.functional as F


class RowRouting:
    """Set before every forward: `single` (one adapter for all rows) or `names` (one name per row)."""

    def __init__(self) -> None:
        self.names: list[str] | None = None
        self.single: str | None = None

    def pass_names(self, _module, args, kwargs):
        """Forward pre-hook for layers without the lean forward."""
        if self.names is not None:
            kwargs["adapter_names"] = self.names
        return args, kwargs


def _lean_forward(module, routing: RowRouting):
    peft_forward = module.forward  # the bound PEFT method

    def forward(x, *args, **kwargs):
        if routing.names is not None:
            return peft_forward(x, *args, adapter_names=routing.names, **kwargs)
        active = routing.single
        if (
            active is None
            or module.disable_adapters
            or module.merged
            or active not in module.lora_A
            or active in module.lora_variant
            or module.training
        ):
            return peft_forward(x, *args, **kwargs)
        result = module.base_layer(x, *args, **kwargs)
        lora_a, lora_b = module.lora_A[active], module.lora_B[active]
        # Same operations in the same order as PEFT's plain path (dropout is a no-op in eval mode).
        update = F.linear(F.linear(x.to(lora_a.weight.dtype), lora_a.weight, lora_a.bias), lora_b.weight, lora_b.bias)
        return result + (update * module.scaling[active]).to(result.dtype)

    return forward


def install(model, routing: RowRouting, done: dict[int, object]) -> None:
    """Set up every LoRA layer of `model` not yet in `done` (layer id -> hook handle or None)."""
    from peft.tuners.lora import LoraLayer
    from peft.tuners.lora.layer import Linear as LoraLinear

    for module in model.modules():
        if not isinstance(module, LoraLayer) or id(module) in done:
            continue
        if type(module) is LoraLinear:
            module.forward = _lean_forward(module, routing)
            done[id(module)] = None
        else:
            done[id(module)] = module.register_forward_pre_hook(routing.pass_names, with_kwargs=True)
