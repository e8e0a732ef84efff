"""Per-request sampling parameters and the next-token choice for a batch of rows with different settings.

One step, per row and in vLLM's order: penalties on the raw logits (repetition over prompt + answer tokens,
frequency and presence over answer tokens only), then greedy rows take the argmax, and sampled rows are divided
by their temperature, cut to their top-k and then their top-p, and drawn. Every transform is a batched tensor op
over the rows that use it, so a batch mixes settings freely and each row gets what it would get alone.
"""

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
    top_k: int = 0  # 0: off (requests may also send -1, as vLLM; the serving logic maps it to 0)
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0

    @property
    def greedy(self) -> bool:
        """Temperatures this close to 0 are greedy: dividing logits by them would overflow to inf."""
        return self.temperature < GREEDY_BELOW

    @property
    def penalised(self) -> bool:
        """Whether any penalty changes this row's logits (then the row keeps a TokenHistory)."""
        return self.repetition_penalty != 1.0 or self.frequency_penalty != 0.0 or self.presence_penalty != 0.0


def make_generator(params: SamplingParams) -> torch.Generator | None:
    """A private random stream for a seeded request, so it repeats whatever else is in its batch.

    Unseeded rows share torch's default stream and are drawn together in one call.
    """
    if params.greedy or params.seed is None:
        return None
    generator = torch.Generator()
    generator.manual_seed(params.seed)
    return generator


class TokenHistory:
    """The tokens a penalised row has seen, as dense vocabulary-sized tensors on the logits' device.

    `seen` marks tokens of the prompt or the answer (what repetition_penalty looks at, as in Hugging Face and
    vLLM); `counts` counts answer tokens only (frequency and presence penalties, as OpenAI and vLLM define them).
    They are built at the row's first step, when the vocabulary size is known from the logits, and grow by one
    token per step, so a step costs the same however long the answer is.
    """

    def __init__(self, prompt_ids: list[int]) -> None:
        self._prompt_ids = prompt_ids
        self._pending: list[int] = []
        self.seen: torch.Tensor | None = None
        self.counts: torch.Tensor | None = None

    def add(self, token: int) -> None:
        """Record a generated token (applied to the tensors at the next step)."""
        self._pending.append(token)

    def tensors(self, vocab: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(`seen` [vocab] bool, `counts` [vocab] float32), up to date with every token added so far."""
        if self.seen is None:
            self.seen = torch.zeros(vocab, dtype=torch.bool, device=device)
            self.counts = torch.zeros(vocab, dtype=torch.float32, device=device)
            self._mark(self._prompt_ids, count=False)
        if self._pending:
            self._mark(self._pending, count=True)
            self._pending = []
        assert self.counts is not None
        return self.seen, self.counts

    def _mark(self, ids: list[int], count: bool) -> None:
        assert self.seen is not None and self.counts is not None
        vocab = self.seen.shape[0]
        inside = [token for token in ids if 0 <= token < vocab]  # ids past the logits (added tokens) have no logit
        if not inside:
            return
        index = torch.tensor(inside, dtype=torch.long, device=self.seen.device)
        self.seen[index] = True
        if count:
            self.counts.index_put_((index,), torch.ones_like(index, dtype=torch.float32), accumulate=True)


def apply_penalties(
    logits: torch.Tensor,
    seen: torch.Tensor,
    counts: torch.Tensor,
    repetition: torch.Tensor,
    frequency: torch.Tensor,
    presence: torch.Tensor,
) -> torch.Tensor:
    """Row-wise penalties on float `logits` [rows, vocab], as vLLM applies them.

    Repetition (CTRL, as Hugging Face's RepetitionPenaltyLogitsProcessor): a `seen` token's logit is divided by
    the penalty when positive, multiplied when not. Then `frequency x count` and `presence x (count > 0)` are
    subtracted, with `counts` of the answer's tokens (OpenAI's definition).
    """
    factor = repetition[:, None]
    repeated = torch.where(logits > 0, logits / factor, logits * factor)
    logits = torch.where(seen, repeated, logits)
    return logits - frequency[:, None] * counts - presence[:, None] * (counts > 0).float()


def sampling_probabilities(
    logits: torch.Tensor, temperatures: torch.Tensor, top_ps: torch.Tensor, top_ks: torch.Tensor | None = None
) -> torch.Tensor:
    """Row-wise temperature, top-k and nucleus (top-p) filtering of `logits` [rows, vocab] into probabilities.

    Top-k keeps every token at least as likely as the k-th (ties stay, as Hugging Face's TopKLogitsWarper and
    vLLM do); a k of 0 is off. Top-p then applies to what top-k left.
    """
    scaled = logits.float() / temperatures[:, None]
    use_top_k = top_ks is not None and bool((top_ks > 0).any())
    if use_top_k or bool((top_ps < 1.0).any()):
        sorted_logits, order = torch.sort(scaled, dim=-1, descending=True)
        if use_top_k:
            assert top_ks is not None
            vocab = scaled.shape[-1]
            keep = torch.where(top_ks > 0, top_ks.clamp(max=vocab), vocab).long()
            kth = sorted_logits.gather(1, (keep - 1)[:, None])
            sorted_logits = sorted_logits.masked_fill(sorted_logits < kth, float("-inf"))
        nucleus = top_ps < 1.0
        if bool(nucleus.any()):
            sorted_probs = torch.softmax(sorted_logits, dim=-1)
            # Drop a token once the mass before it already reaches top_p; the most likely token always stays.
            # Rows at top_p 1 keep all (a rounded mass of 1.0000001 must not cut their tail).
            drop = ((sorted_probs.cumsum(dim=-1) - sorted_probs) >= top_ps[:, None]) & nucleus[:, None]
            drop[:, 0] = False  # also when top_p underflows to 0 in float32 (a request may send 1e-300)
            sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        scaled = torch.full_like(scaled, float("-inf")).scatter(1, order, sorted_logits)
    return torch.softmax(scaled, dim=-1)


def penalised_logits(
    logits: torch.Tensor, params: list[SamplingParams], histories: list[TokenHistory | None]
) -> torch.Tensor:
    """`logits` with each penalised row's penalties applied (one batched pass over those rows); others as given."""
    rows = [row for row, row_params in enumerate(params) if row_params.penalised]
    if not rows:
        return logits
    vocab, device = logits.shape[-1], logits.device
    states = []
    for row in rows:
        history = histories[row]
        if history is None:
            raise ValueError(f"row {row} has penalties but no TokenHistory")
        states.append(history.tensors(vocab, device))
    index = torch.tensor(rows, dtype=torch.long, device=device)

    def column(name: str) -> torch.Tensor:
        return torch.tensor([getattr(params[row], name) for row in rows], dtype=torch.float32, device=device)

    adjusted = apply_penalties(
        logits.index_select(0, index).float(),
        torch.stack([seen for seen, _ in states]),
        torch.stack([counts for _, counts in states]),
        column("repetition_penalty"),
        column("frequency_penalty"),
        column("presence_penalty"),
    )
    return logits.float().index_copy(0, index, adjusted)


def choose_next_tokens(
    logits: torch.Tensor,
    params: list[SamplingParams],
    generators: list[torch.Generator | None],
    histories: list[TokenHistory | None] | None = None,
) -> list[int]:
    """One token per row of `logits` ([rows, vocab]): argmax for greedy rows, top-k/top-p sampling for the others,
    both after the row's penalties (`histories[row]` is required for a penalised row).

    Sampled rows are filtered in one batched pass; unseeded ones are drawn together, seeded ones each from
    their own generator.
    """
    logits = penalised_logits(logits, params, histories or [None] * len(params))
    chosen = torch.argmax(logits, dim=-1).tolist()
    sampled = [row for row, row_params in enumerate(params) if not row_params.greedy]
    if not sampled:
        return chosen
    index = torch.tensor(sampled, dtype=torch.long, device=logits.device)
    temperatures = torch.tensor([params[row].temperature for row in sampled], device=logits.device)
    top_ps = torch.tensor([params[row].top_p for row in sampled], device=logits.device)
    top_ks = torch.tensor([params[row].top_k for row in sampled], dtype=torch.long, device=logits.device)
    probabilities = sampling_probabilities(logits.index_select(0, index), temperatures, top_ps, top_ks).cpu()
    shared = [position for position, row in enumerate(sampled) if generators[row] is None]
    if shared:
        draws = torch.multinomial(probabilities[shared], 1).squeeze(1).tolist()
        for position, token in zip(shared, draws, strict=True):
            chosen[sampled[position]] = token
    for position, row in enumerate(sampled):
        if generators[row] is not None:
            chosen[row] = int(torch.multinomial(probabilities[position], 1, generator=generators[row]).item())
    return chosen
