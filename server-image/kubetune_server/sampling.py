"""Per-request sampling parameters and the next-token choice for a batch of rows with different settings."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


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
        return self.temperature <= 0.0


def make_generator(params: SamplingParams) -> torch.Generator | None:
    """A private random stream per request, so a seeded request repeats whatever else is in its batch."""
    if params.greedy:
        return None
    generator = torch.Generator()
    if params.seed is not None:
        generator.manual_seed(params.seed)
    else:
        generator.seed()
    return generator


def _sample_row(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    scaled = logits.float() / params.temperature
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(scaled, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        # Drop a token once the mass before it already reaches top_p; the most likely token always stays.
        drop = (cumulative - torch.softmax(sorted_logits, dim=-1)) >= params.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        scaled = torch.full_like(scaled, float("-inf")).scatter(0, order, sorted_logits)
    probabilities = torch.softmax(scaled, dim=-1)
    return int(torch.multinomial(probabilities.cpu(), 1, generator=generator).item())


def choose_next_tokens(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None]
) -> list[int]:
    """One token per row of `logits` ([rows, vocab]): argmax for greedy rows, seeded top-p sampling otherwise."""
    greedy_choice = torch.argmax(logits, dim=-1).tolist()
    return [
        greedy_choice[row] if row_params.greedy else _sample_row(logits[row], row_params, generators[row])
        for row, row_params in enumerate(params)
    ]
