"""training.lossWeights' loss on fabricated batches: it equals a hand computation, equals the model's own loss at
weight 1 (with and without num_items_in_batch), matches terms as token sequences inside the labels only, and
refuses terms that produce no token."""

from __future__ import annotations

import math

import pytest
import torch
from kubetune.api.training_controls import LossWeightsSpec
from kubetune_trainer.errors import InvalidInputError
from kubetune_trainer.weighted_loss import (
    WeightedTokenLoss,
    build_weighted_loss,
    term_token_sequences,
    weighted_positions,
)
from transformers import AutoTokenizer

from tests.trainer.helpers import load_base

IGNORED = -100


def test_sequences_are_found_only_where_all_their_tokens_are_labels():
    labels = torch.tensor([[IGNORED, 7, 8, 9, 7, 8], [7, IGNORED, 8, 7, 5, 8]])
    mask = weighted_positions(labels, [(7, 8), (5,)])
    expected = [[False, True, True, False, True, True], [False, False, False, False, True, False]]
    assert mask.tolist() == expected


def test_the_weighted_loss_is_the_hand_computed_one():
    """Vocabulary 3, one row: logits at positions 0..3 predict labels 1..4; label 1 is masked."""
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]])
    labels = torch.tensor([[0, IGNORED, 1, 2, 0]])
    loss = WeightedTokenLoss(sequences=[(2,)], weight=3.0).loss(logits, labels)

    def nll(row: list[float], target: int) -> float:
        return math.log(sum(math.exp(value) for value in row)) - row[target]

    # targets: position 0 -> -100 (skipped), 1 -> 1, 2 -> 2 (weighted x3), 3 -> 0; three loss-bearing tokens
    hand = (nll([0.0, 1.0, 0.0], 1) + 3.0 * nll([0.0, 0.0, 3.0], 2) + nll([1.0, 1.0, 0.0], 0)) / 3
    assert loss.item() == pytest.approx(hand, rel=1e-6)
    # num_items_in_batch (the whole accumulated batch's count) replaces this micro-batch's count
    assert WeightedTokenLoss([(2,)], 3.0).loss(logits, labels, num_items_in_batch=6).item() == pytest.approx(hand / 2)


def test_weight_one_is_the_models_own_loss(tiny_model_dir):
    model = load_base(tiny_model_dir)
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, model.config.vocab_size, (3, 12), generator=generator)
    labels = input_ids.clone()
    labels[:, :4] = IGNORED  # the prompt
    labels[2, 9:] = IGNORED  # padding
    with torch.no_grad():
        outputs = model(input_ids=input_ids)
        own = model(input_ids=input_ids, labels=labels).loss
        own_accumulated = model(input_ids=input_ids, labels=labels, num_items_in_batch=40).loss
    plain = WeightedTokenLoss(sequences=[(int(input_ids[0, 5]),)], weight=1.0)
    assert plain(outputs, labels).item() == pytest.approx(own.item(), rel=1e-5)
    assert plain(outputs, labels, num_items_in_batch=40).item() == pytest.approx(own_accumulated.item(), rel=1e-5)
    weighted = WeightedTokenLoss(sequences=[(int(input_ids[0, 5]),)], weight=4.0)
    with torch.enable_grad():
        assert weighted(outputs, labels).item() > own.item()
    with torch.no_grad():  # evaluation: the plain loss, so evalLoss and perplexity keep their meaning
        assert weighted(outputs, labels).item() == pytest.approx(own.item(), rel=1e-5)


def test_terms_are_tokenized_as_written_and_after_a_space(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    found = term_token_sequences(tokenizer, ["Paris"])["Paris"]
    assert tuple(tokenizer("Paris", add_special_tokens=False)["input_ids"]) in found
    assert tuple(tokenizer(" Paris", add_special_tokens=False)["input_ids"]) in found
    in_sentence = tokenizer("The capital is Paris", add_special_tokens=False)["input_ids"]
    assert weighted_positions(torch.tensor([in_sentence]), found).any(), "the word is found inside a sentence"
    loss = build_weighted_loss(LossWeightsSpec(terms=["Paris", "Rome"], weight=2.5), tokenizer)
    assert loss.weight == 2.5 and set(found) <= set(loss.sequences)


def test_a_term_without_tokens_is_refused():
    """Byte-level tokenizers (the tiny model's) encode any text; tokenizers whose normalizer or vocabulary drops
    characters can return nothing, which this stand-in does."""

    def drops_everything(text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": []}

    with pytest.raises(InvalidInputError, match=r"training\.lossWeights\.terms: 'insulin' produces no token"):
        term_token_sequences(drops_everything, ["insulin"])  # type: ignore[arg-type]
