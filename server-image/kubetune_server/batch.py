"""The running batch: rows decoding together with one left-padded KV cache.

New rows are prefilled as a group and merged in by left-padding the shorter cache; finished rows are
dropped with an index select. Left padding keeps every row's newest token in the last column, and
explicit position ids keep each row's positions as if it ran alone, so greedy output does not depend
on what else is in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class BatchState:
    """Tensors shared by the rows of a batch; row `i` of each belongs to the i-th live sequence."""

    cache: object  # transformers DynamicCache
    attention_mask: torch.Tensor  # [rows, cached length], 1 for real tokens
    next_positions: torch.Tensor  # [rows], position id of each row's next input token
    next_tokens: torch.Tensor  # [rows], the token each row feeds next
    extra: dict = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return int(self.attention_mask.shape[0])

    @property
    def length(self) -> int:
        return int(self.attention_mask.shape[1])


def _layers(cache) -> list:
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise TypeError(f"unsupported KV cache {type(cache).__name__}: expected a transformers DynamicCache")
    for layer in layers:
        if getattr(layer, "is_sliding", False) or not hasattr(layer, "keys"):
            raise TypeError(f"its cache layers ({type(layer).__name__}) cannot be merged or trimmed row by row")
    return layers


def check_cache(cache) -> None:
    """Raise TypeError, saying why, when `cache` is not one this module can merge, trim and roll back."""
    _layers(cache)


def truncate(cache, length: int) -> None:
    """Cut every layer back to its first `length` columns (undo a forward that failed part-way)."""
    for layer in _layers(cache):
        if layer.keys is not None and layer.keys.shape[2] > length:
            layer.keys = layer.keys[:, :, :length, :]
            layer.values = layer.values[:, :, :length, :]


def _pad_left(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    if width == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = width
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def merge(running: BatchState | None, joining: BatchState) -> BatchState:
    """One batch holding the rows of `running` followed by those of `joining`."""
    if running is None:
        return joining
    length = max(running.length, joining.length)
    pad_running, pad_joining = length - running.length, length - joining.length
    for mine, theirs in zip(_layers(running.cache), _layers(joining.cache), strict=True):
        mine.keys = torch.cat([_pad_left(mine.keys, pad_running, 2), _pad_left(theirs.keys, pad_joining, 2)], dim=0)
        mine.values = torch.cat(
            [_pad_left(mine.values, pad_running, 2), _pad_left(theirs.values, pad_joining, 2)], dim=0
        )
    mask = torch.cat(
        [_pad_left(running.attention_mask, pad_running, 1), _pad_left(joining.attention_mask, pad_joining, 1)], dim=0
    )
    return BatchState(
        cache=running.cache,
        attention_mask=mask,
        next_positions=torch.cat([running.next_positions, joining.next_positions]),
        next_tokens=torch.cat([running.next_tokens, joining.next_tokens]),
    )


def keep_rows(state: BatchState, keep: list[int]) -> BatchState | None:
    """The batch without the rows not in `keep`, and without cache columns that are padding for every row left."""
    if not keep:
        return None
    index = torch.tensor(keep, dtype=torch.long, device=state.attention_mask.device)
    mask = state.attention_mask.index_select(0, index)
    used = mask.any(dim=0).nonzero()
    start = int(used[0].item()) if used.numel() else mask.shape[1]
    for layer in _layers(state.cache):
        layer.keys = layer.keys.index_select(0, index)[:, :, start:, :]
        layer.values = layer.values.index_select(0, index)[:, :, start:, :]
    return BatchState(
        cache=state.cache,
        attention_mask=mask[:, start:],
        next_positions=state.next_positions.index_select(0, index),
        next_tokens=state.next_tokens.index_select(0, index),
    )


def left_pad(prompts: list[list[int]], pad_id: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask of `prompts`, padded on the left to the longest."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    return ids.to(device), mask.to(device)
