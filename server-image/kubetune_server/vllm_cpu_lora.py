"""vLLM's LoRA path on CPU, grouped by adapter: what makes the vLLM engine as fast as the transformers engine on a
CPU, and correct for base requests once every adapter slot is in use.

vLLM's CPU platform applies LoRA with `PunicaWrapperCPU`, which runs vLLM's PyTorch reference ops
(`vllm.lora.ops.torch_ops`) on every LoRA layer of every step: for each token they gather a private copy of that
token's adapter weights (`weights[token_indices]`, tokens x rank x features) and multiply token by token
(`einsum("bi, boi -> bo")`), with a dozen small tensor operations and a zeroed float32 buffer per layer slice.
On SmolLM2-135M with a rank-16 adapter 32 concurrent requests ran at 0.56-0.69x the transformers engine's
speed and one request at 0.71-0.91x (server-image/README.md, "The vLLM engine on a CPU"). Requests
without an adapter pay it too (vLLM's CPU model runs eagerly whenever LoRA is enabled, and the decode ops do not
skip them), and they are multiplied with the *last* adapter slot (`weights[-1]`): once all `maxLoras` slots
hold adapters, a base request is answered as if it had asked for one of them.

`GroupedPunicaWrapperCPU` keeps vLLM's wrapper and changes only how its products are computed: once per step
(when vLLM updates the LoRA mapping) the step's tokens are grouped by adapter slot (a batch has few adapters), and
each group takes one product into the rank and one fused multiply-add back per layer slice, with its adapter's
weights read in place; tokens without an adapter are left alone. Measured: 1.14-1.61x the transformers engine
from c=8 up, 0.85-1.20x at c=1, where the rest is vLLM's own per-step cost (the same without an adapter).
vLLM chooses a platform's wrapper through `Platform.get_punica_wrapper()`;
`vllm_cpu_platform.CpuPlatformWithGroupedLora` is vLLM's own `CpuPlatform` with only that answer changed;
`vllm_plugins.py` is the vLLM platform plugin that activates it exactly where vLLM would pick the stock one.
"""

from __future__ import annotations

import torch
from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

Group = tuple[int, "torch.Tensor | None"]
"""An adapter slot (-1: no adapter) and the rows that use it (None: every row)."""


def slot_groups(indices: torch.Tensor) -> list[Group]:
    """The rows of each adapter slot in `indices` (one slot per token or request, -1 for none)."""
    slots = torch.unique(indices).tolist()
    if len(slots) == 1:
        return [(slots[0], None)]
    return [(slot, (indices == slot).nonzero().squeeze(1)) for slot in slots]


def _weights(stacked: torch.Tensor, slot: int) -> torch.Tensor:
    """One slot's matrix from vLLM's stacked LoRA weights (slots x 1 x out x in, or slots x out x in), a view."""
    return stacked[slot].reshape(stacked.size(-2), stacked.size(-1))


def grouped_shrink(y: torch.Tensor, x: torch.Tensor, stacked: torch.Tensor, scale: float, groups: list[Group]):
    """`y[:, :rank] = scale * x @ A[slot].T` for each group's rows; rows without an adapter are set to 0."""
    rank = stacked.size(-2)
    for slot, rows in groups:
        if slot < 0:
            if rows is not None:
                y[rows, :rank] = 0
            continue
        a = _weights(stacked, slot).to(y.dtype)
        if rows is None:
            y[:, :rank] = (x.to(y.dtype) @ a.t()) * scale
        else:
            y[rows, :rank] = (x.index_select(0, rows).to(y.dtype) @ a.t()) * scale


def grouped_expand(
    y: torch.Tensor,
    x: torch.Tensor,
    stacked: torch.Tensor,
    offset: int,
    width: int | None,
    add_inputs: bool,
    groups: list[Group],
):
    """`y[:, offset:offset + width] (+)= x @ B[slot].T` for each group's rows (width None: as many columns as B
    and y share, from 0); rows without an adapter are left alone when adding, else set to 0."""
    if width is None:
        offset, width = 0, min(stacked.size(-2), y.size(1))
    target = y[:, offset : offset + width]
    for slot, rows in groups:
        if slot < 0:
            if not add_inputs:
                target.zero_() if rows is None else target.index_fill_(0, rows, 0)
            continue
        b = _weights(stacked, slot)[:width].to(y.dtype)
        product = (x if rows is None else x.index_select(0, rows)).to(y.dtype) @ b.t()
        if rows is None:
            target.add_(product) if add_inputs else target.copy_(product)
        elif add_inputs:
            target.index_add_(0, rows, product)
        else:
            target.index_copy_(0, rows, product)


class GroupedPunicaWrapperCPU(PunicaWrapperCPU):
    """vLLM's CPU punica wrapper whose products run per adapter group instead of per token."""

    def __init__(self, max_num_batched_tokens: int, max_batches: int, device, **kwargs) -> None:
        super().__init__(max_num_batched_tokens, max_batches, device, **kwargs)
        self._token_groups: list[Group] = []
        self._sampler_groups: list[Group] = []
        self._views: dict[tuple[int, int, int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def update_metadata(self, mapping, lora_index_to_id, max_loras, vocab_size, **kwargs) -> None:
        super().update_metadata(mapping, lora_index_to_id, max_loras, vocab_size, **kwargs)
        self._token_groups = slot_groups(self.token_lora_indices)
        self._sampler_groups = slot_groups(self.sampler_indices)

    def add_lora_linear(
        self, y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, *, buffer=None, **kwargs
    ) -> None:
        """`y[:, slice i] += scale * x @ A_i[slot].T @ B_i[slot].T` per adapter group: one product into the rank and
        one fused multiply-add back per slice (vLLM's wrapper also zeroes a float32 buffer per slice and takes a
        dozen more small tensor operations, which at one token a step cost more than the products themselves).
        The rank-sized intermediate stays in the model's dtype (float32 on CPU by default, as vLLM's buffer)."""
        rows_out = y.view(-1, y.size(-1))
        x = x.view(-1, x.size(-1))
        offset = 0
        for index, width in enumerate(output_slices):
            target = rows_out[:, offset : offset + width]
            offset += width
            for slot, rows in self._token_groups:
                if slot < 0:
                    continue
                a_t, b_t = self._slot_views(lora_a_stacked[index], lora_b_stacked[index], slot, width)
                inputs = x if rows is None else x.index_select(0, rows)
                hidden = torch.mm(inputs.to(a_t.dtype), a_t)
                if scale != 1.0:
                    hidden.mul_(scale)
                hidden, b_t = hidden.to(y.dtype), b_t.to(y.dtype)
                if rows is None:
                    target.addmm_(hidden, b_t)
                else:
                    target.index_add_(0, rows, torch.mm(hidden, b_t))

    def _slot_views(self, a_stacked, b_stacked, slot: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A[slot].T and B[slot][:width].T as views of vLLM's stacked weights (a new adapter in the slot is
        copied into the same memory, so the views stay current), kept across steps."""
        key = (id(a_stacked), id(b_stacked), slot, width)
        views = self._views.get(key)
        if views is None:
            views = (_weights(a_stacked, slot).t(), _weights(b_stacked, slot)[:width].t())
            self._views[key] = views
        return views

    def _shrink_prefill(self, y, x, w_t_all, scale) -> None:
        grouped_shrink(y, x, w_t_all, scale, self._token_groups)

    _shrink_decode = _shrink_prefill

    def _expand_prefill(self, y, x, w_t_all, add_inputs) -> None:
        grouped_expand(y, x, w_t_all, 0, None, add_inputs, self._token_groups)

    _expand_decode = _expand_prefill

    def _expand_slice_prefill(self, y, x, w_t_all, y_offset, y_slice_size, add_inputs) -> None:
        grouped_expand(y, x, w_t_all, y_offset, y_slice_size, add_inputs, self._token_groups)

    _expand_slice_decode = _expand_slice_prefill

    def add_lora_logits(self, y, x, lora_a_stacked, lora_b_stacked, scale, *, buffer=None, **kwargs) -> None:
        rows = y.view(-1, y.size(-1))
        x = x.view(-1, x.size(-1))
        if buffer is None:
            buffer = torch.zeros((x.size(0), lora_b_stacked.size(-1)), dtype=torch.float32, device=x.device)
        grouped_shrink(buffer, x, lora_a_stacked, scale, self._sampler_groups)
        grouped_expand(rows, buffer, lora_b_stacked, 0, None, True, self._sampler_groups)
