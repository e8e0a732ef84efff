"""training.lossWeights: a per-token cross-entropy in which the tokens of listed words count more.

It plugs into the Trainer's `compute_loss_func` hook (which TRL's SFTTrainer passes through), so the trainer itself
is not forked. Words are matched as token sequences in the labels, not as loose token ids: weighing every 'di' token
because 'diabetes' starts with it would weigh unrelated words too."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from kubetune.api.training_controls import LossWeightsSpec
from transformers import PreTrainedTokenizerBase

from .errors import InvalidInputError

log = logging.getLogger(__name__)

IGNORED = -100


def term_token_sequences(tokenizer: PreTrainedTokenizerBase, terms: list[str]) -> dict[str, list[tuple[int, ...]]]:
    """Each term's token sequences: as written and with a leading space (a word inside a sentence; byte-level BPE
    and SentencePiece tokenizers encode it differently), without special tokens. A term that yields no token is
    refused (exit 64): it could never weigh anything."""
    found: dict[str, list[tuple[int, ...]]] = {}
    for term in terms:
        word = term.strip()
        variants: list[tuple[int, ...]] = []
        for text in (word, " " + word):
            ids = tuple(tokenizer(text, add_special_tokens=False)["input_ids"])
            if ids and ids not in variants:
                variants.append(ids)
        if not variants:
            raise InvalidInputError(
                f"training.lossWeights.terms: {term!r} produces no token with the base model's tokenizer; "
                "remove it or write the word as it appears in the answers"
            )
        found[term] = variants
    return found


def weighted_positions(labels: torch.Tensor, sequences: list[tuple[int, ...]]) -> torch.Tensor:
    """Boolean mask over `labels` (batch, length): positions covered by an occurrence of one of `sequences`.
    Ignored positions (-100) never match, so a term is only found inside the trained answer."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    length = labels.shape[-1]
    for sequence in sequences:
        size = len(sequence)
        if size > length:
            continue
        pattern = torch.tensor(sequence, dtype=labels.dtype, device=labels.device)
        starts = (labels.unfold(-1, size, 1) == pattern).all(-1)  # (batch, length - size + 1)
        for offset in range(size):
            mask[..., offset : offset + starts.shape[-1]] |= starts
    return mask


@dataclass
class WeightedTokenLoss:
    """`compute_loss_func(outputs, labels, num_items_in_batch)`: the causal-LM cross-entropy with the tokens of
    `sequences` weighted `weight` times, summed and divided by the loss-bearing token count of the whole
    accumulated batch (`num_items_in_batch`, as the models' own loss does), so weight 1 is exactly the plain loss.

    Weights apply only where gradients are taken (training); evaluation runs under no_grad and gets the plain
    loss, so evalLoss, perplexity and the best-checkpoint choice keep their meaning."""

    sequences: list[tuple[int, ...]]
    weight: float

    def __call__(self, outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        return self.loss(logits, labels, num_items_in_batch, weighted=torch.is_grad_enabled())

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch=None, *, weighted=True):
        targets = labels[..., 1:].to(logits.device)
        per_token = torch.nn.functional.cross_entropy(
            logits[..., :-1, :].float().reshape(-1, logits.shape[-1]),
            targets.reshape(-1),
            ignore_index=IGNORED,
            reduction="none",
        ).view(targets.shape)
        if weighted and self.weight != 1.0:
            weights = torch.ones_like(per_token)
            weights[weighted_positions(targets, self.sequences)] = self.weight
            per_token = per_token * weights
        count = num_items_in_batch if num_items_in_batch is not None else (targets != IGNORED).sum()
        return per_token.sum() / torch.as_tensor(count, device=per_token.device).clamp(min=1)


def build_weighted_loss(spec: LossWeightsSpec, tokenizer: PreTrainedTokenizerBase) -> WeightedTokenLoss:
    """The loss for `spec`, logging which token sequences each term became (so users can check the tokenization)."""
    per_term = term_token_sequences(tokenizer, spec.terms)
    for term, variants in per_term.items():
        shown = " | ".join(str(tokenizer.convert_ids_to_tokens(list(ids))) for ids in variants)
        log.info("lossWeights: %r weighs x%g as token sequences %s", term, spec.weight, shown)
    sequences = sorted({ids for variants in per_term.values() for ids in variants})
    return WeightedTokenLoss(sequences=sequences, weight=spec.weight)
