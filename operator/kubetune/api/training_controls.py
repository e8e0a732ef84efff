"""Training controls from the tutorial's advanced chapter: early stopping and a weighted loss on listed terms.

Both are optional sections of `training`; absent, training runs exactly as before (NEUTRAL_DEFAULTS)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from .base import ApiModel

StopReason = Literal["EarlyStopped", "MaxSteps", "Epochs"]


def _loss_term(value: str) -> str:
    if not value.strip():
        raise ValueError(f"{value!r} is not a word: a loss weight term needs at least one non-space character")
    return value


# A word or phrase to weigh: at least one non-space character (the CRD's pattern is unanchored, as in Kubernetes).
LossTerm = Annotated[
    str, Field(min_length=1, max_length=128, json_schema_extra={"pattern": "\\S"}), AfterValidator(_loss_term)
]


class EarlyStoppingSpec(ApiModel):
    """Stop training when the evaluation loss stops improving (transformers' EarlyStoppingCallback) and publish
    the checkpoint with the lowest evaluation loss, as loadBestModelAtEnd does (early stopping implies it). Needs
    evaluation rows and training.evalSteps, with training.saveSteps a multiple of it; with saveSteps equal to
    evalSteps every evaluated step has a checkpoint, so the best evaluation is the one published."""

    patience: int = Field(default=3, ge=1, le=1000)
    """Evaluations in a row without improvement after which training stops (each evalSteps apart)."""

    threshold: float = Field(default=0.0, ge=0, le=100)
    """Least decrease of the evaluation loss, below the best so far, that counts as an improvement; 0 counts any
    decrease."""


class LossWeightsSpec(ApiModel):
    """Weigh the listed words more in the training loss (the tutorial's WeightedLossTrainer, done through the
    Trainer's compute_loss_func hook). Each term is tokenized with the base model's tokenizer twice, as written and
    with a leading space (how a word inside a sentence is tokenized); wherever a label sequence matches one of these
    token sequences, those answer tokens count `weight` times in the cross-entropy. The loss is still divided by the
    number of loss-bearing tokens, so weight 1 is the plain loss and gradient accumulation stays exact. Evaluation
    loss (and so perplexity, loadBestModelAtEnd and earlyStopping) stays the plain, unweighted loss. Not with
    ligerKernel (its fused loss never builds the logits)."""

    terms: list[LossTerm] = Field(min_length=1, max_length=256)
    """Words or phrases whose tokens weigh more, e.g. ['diabetes', 'insulin']; case-sensitive."""

    weight: float = Field(default=2.0, gt=0, le=100)
    """Factor on the loss of those tokens (1 changes nothing; below 1 weighs them less)."""

    @model_validator(mode="after")
    def _distinct(self) -> LossWeightsSpec:
        stripped = [term.strip() for term in self.terms]
        duplicates = sorted({term for term in stripped if stripped.count(term) > 1})
        if duplicates:
            raise ValueError(f"terms must be distinct, got {duplicates} more than once")
        return self
