"""Per-request sampling parameters and the next-token choice for a batch of rows with different settings."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

GREEDY_BELOW = 1e-5


@dataclass(frozen=True)
class SamplingParams:
    """How one request generates: the engine applies these per row, so a batch can mix them."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = field(default_factory=tuple)
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        """Temperatures this close to 0 are greedy: dividing logits by them would overflow to inf."""
        return self.temperature < GREEDY_BELOW


def make_generator(params: SamplingParams) -> torch.Generator | None:
    """A private random stream for a seeded request, so it repeats whatever else is in its batch.

    Unseeded rows share torch's default stream and are drawn together in one call.
    """
    if params.greedy or params.seed is None:
        return None
    generator = torch.Generator()
    generator.manual_seed(params.seed)
    return generator


def sampling_probabilities(logits: torch.Tensor, temperatures: torch.Tensor, top_ps: torch.Tensor) -> torch.Tensor:
    """Row-wise temperature and nucleus (top-p) filtering of `logits` [rows, vocab] into probabilities."""
    scaled = logits.float() / temperatures[:, None]
    if bool((top_ps < 1.0).any()):
        sorted_logits, order = torch.sort(scaled, dim=-1, descending=True)
        sorted_probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token once the mass before it already reaches top_p; the most likely token always stays.
        drop = (sorted_probs.cumsum(dim=-1) - sorted_probs) >= top_ps[:, None]
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        scaled = torch.full_like(scaled, float("-inf")).scatter(1, order, sorted_logits)
    return torch.softmax(scaled, dim=-1)


def choose_next_tokens(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None]
) -> list[int]:
    """One token per row of `logits` ([rows, vocab]): argmax for greedy rows, top-p sampling for the others.

    Sampled rows are filtered in one batched pass; unseeded ones are drawn together, seeded ones each from
    their own generator.
    """
    chosen = torch.argmax(logits, dim=-1).tolist()
    sampled = [row for row, row_params in enumerate(params) if not row_params.greedy]
    if not sampled:
        return chosen
    index = torch.tensor(sampled, dtype=torch.long, device=logits.device)
    temperatures = torch.tensor([params[row].temperature for row in sampled], device=logits.device)
    top_ps = torch.tensor([params[row].top_p for row in sampled], device=logits.device)
    probabilities = sampling_probabilities(logits.index_select(0, index), temperatures, top_ps).cpu()
    shared = [position for position, row in enumerate(sampled) if generators[row] is None]
    if shared:
        draws = torch.multinomial(probabilities[shared], 1).squeeze(1).tolist()
        for position, token in zip(shared, draws, strict=True):
            chosen[sampled[position]] = token
    for position, row in enumerate(sampled):
        if generators[row] is not None:
            chosen[row] = int(torch.multinomial(probabilities[position], 1, generator=generators[row]).item())
    return chosen
