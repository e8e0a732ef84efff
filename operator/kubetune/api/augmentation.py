"""Data augmentation of the training rows before training: paraphrase and back-translation with a model the user
names (the base model by default), and what the trainer reports about it."""

from __future__ import annotations

from typing import Literal, NamedTuple

from pydantic import Field, model_validator

from .base import ApiModel, ShortText
from .sources import ModelSource

TEXT_PLACEHOLDER = "{text}"
DEFAULT_PARAPHRASE_PROMPT = (
    "Rewrite the following text with different words. Keep its meaning, its language and every name and number. "
    "Reply with the rewritten text only.\n\n{text}"
)
AugmentationKind = Literal["paraphrase", "backTranslation"]
AUGMENTATION_PATH = "spec.dataset.augmentation"


class AugmentationModel(NamedTuple):
    """One model the augmentation loads: where it is set, the model, and whether it is the base model by default."""

    field: str
    """Its field under spec.dataset.augmentation, e.g. 'paraphrase.model'."""
    source: ModelSource
    is_base_model: bool

    @property
    def path(self) -> str:
        return f"{AUGMENTATION_PATH}.{self.field}"


class GenerationSettings(ApiModel):
    """How many new rows each chosen row gives, and how they are generated."""

    copies: int = Field(default=1, ge=1, le=16)
    """New rows generated per chosen training row. More than 1 needs temperature > 0 (greedy decoding gives the
    same text every time)."""

    temperature: float = Field(default=0.7, ge=0, le=2)
    """Sampling temperature; 0 decodes greedily. Sampling is seeded (augmentation.seed), so a run on the same
    machine and software gives the same rows again."""

    top_p: float = Field(default=0.95, gt=0, le=1)
    """Nucleus sampling: sample only from the most likely tokens whose probabilities add up to topP (with
    temperature > 0)."""

    max_new_tokens: int = Field(default=256, ge=1, le=4096)
    """Longest generated text in tokens; an output that has not ended by then is dropped (counted as tooLong)."""

    @model_validator(mode="after")
    def _copies_need_sampling(self) -> GenerationSettings:
        if self.copies > 1 and self.temperature == 0:
            raise ValueError(
                f"copies {self.copies} needs temperature > 0: greedy decoding (temperature 0) gives the same text "
                "for every copy"
            )
        return self


class ParaphraseSpec(GenerationSettings):
    """Rewrite the prompt side of each chosen row with an instruct model (the answer is kept as it is)."""

    model: ModelSource | None = None
    """The model that paraphrases, prompted through its chat template; empty uses the base model. An instruct
    model paraphrases best; a large base model is loaded whole (unquantized), so name a smaller one for QLoRA."""

    prompt: str | None = Field(default=None, min_length=7, max_length=4096)
    """The instruction sent to the model, with {text} where the text to rewrite goes. Empty uses: 'Rewrite the
    following text with different words. Keep its meaning, its language and every name and number. Reply with the
    rewritten text only.' followed by the text."""

    @model_validator(mode="after")
    def _prompt_has_text(self) -> ParaphraseSpec:
        if self.prompt is not None and TEXT_PLACEHOLDER not in self.prompt:
            raise ValueError(f"paraphrase.prompt must contain {TEXT_PLACEHOLDER} where the text to rewrite goes")
        return self


class BackTranslationSpec(GenerationSettings):
    """Translate the prompt side of each chosen row into a pivot language and back (the answer is kept)."""

    temperature: float = Field(default=0.0, ge=0, le=2)
    """Sampling temperature of both translations; 0 (the default) decodes greedily, as translation usually is."""

    model: ModelSource | None = None
    """The model that translates into pivotLanguage: an instruct (causal) model, prompted through its chat template,
    or an encoder-decoder translation model such as Helsinki-NLP/opus-mt-ko-en, given the text as it is. Empty uses
    the base model."""

    reverse_model: ModelSource | None = None
    """The model that translates back from pivotLanguage; empty uses `model` (one multilingual instruct model does
    both directions; a one-direction translation model needs one for the other direction here, or an instruct model)."""

    source_language: ShortText
    """Language of the dataset's prompts, as a name the model understands (e.g. 'Korean'); the back translation
    asks for it."""

    pivot_language: ShortText
    """Language to translate through (e.g. 'English'); with translation models it must be the one they translate
    to and from."""

    @model_validator(mode="after")
    def _two_languages(self) -> BackTranslationSpec:
        if self.source_language.strip().casefold() == self.pivot_language.strip().casefold():
            raise ValueError(
                f"backTranslation.pivotLanguage must differ from sourceLanguage (both {self.source_language!r})"
            )
        return self


class AugmentationSpec(ApiModel):
    """New training rows generated before training from the training rows (never from the evaluation rows): the
    prompt side is rewritten, the answer kept. Cached on the output volume, so a retry or resume reuses them."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.paraphrase) || has(self.backTranslation)",
                    "message": "augmentation needs paraphrase, backTranslation or both",
                }
            ]
        }
    }

    paraphrase: ParaphraseSpec | None = None
    """Add paraphrased copies of the chosen rows."""

    back_translation: BackTranslationSpec | None = None
    """Add back-translated copies of the chosen rows."""

    fraction: float = Field(default=1.0, gt=0, le=1)
    """Fraction of the training rows to augment (chosen with the seed; at least one row). Generation time grows
    with rows x fraction x copies, for each kind."""

    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    """Seed for choosing the rows and for sampling; empty uses training.seed."""

    batch_size: int = Field(default=8, ge=1, le=1024)
    """Rows per generation call; larger is faster on a GPU and needs more memory."""

    @model_validator(mode="after")
    def _something_to_do(self) -> AugmentationSpec:
        if self.paraphrase is None and self.back_translation is None:
            raise ValueError("augmentation needs paraphrase, backTranslation or both")
        return self

    def models(self, base_model: ModelSource) -> list[AugmentationModel]:
        """Every model the augmentation loads, in order, with the defaults resolved (the operator mounts, authorises
        and checks them like the base model; the trainer loads them)."""
        chosen: list[AugmentationModel] = []
        if self.paraphrase is not None:
            model = self.paraphrase.model
            chosen.append(AugmentationModel("paraphrase.model", model or base_model, model is None))
        if self.back_translation is not None:
            forward = self.back_translation.model
            chosen.append(AugmentationModel("backTranslation.model", forward or base_model, forward is None))
            reverse = self.back_translation.reverse_model
            if reverse is not None:
                chosen.append(AugmentationModel("backTranslation.reverseModel", reverse, False))
        return chosen


class AugmentationResult(ApiModel):
    """What one kind of augmentation added to the training rows."""

    kind: AugmentationKind
    """paraphrase or backTranslation."""

    model: str = Field(max_length=1024)
    """The model(s) that generated the rows."""

    source_rows: int = Field(ge=0)
    """Training rows chosen to augment (augmentation.fraction of them)."""

    generated: int = Field(ge=0)
    """Texts generated (chosen rows with a rewritable prompt x copies)."""

    added: int = Field(ge=0)
    """Rows added to the training rows: the generated texts that were kept."""

    dropped_empty: int = Field(default=0, ge=0)
    """Generated texts dropped because they were empty."""

    dropped_unchanged: int = Field(default=0, ge=0)
    """Generated texts dropped because they equal the source text (ignoring case and spacing)."""

    dropped_duplicate: int = Field(default=0, ge=0)
    """Generated texts dropped because another copy of the same row already gave them."""

    dropped_too_long: int = Field(default=0, ge=0)
    """Generated texts dropped because they had not ended within maxNewTokens."""

    dropped_not_a_question: int = Field(default=0, ge=0)
    """Generated texts dropped because the source is a question (ends with ?) and they are not: small models often
    answer the question instead of rewriting it, and an answer in the prompt would teach nothing true."""

    def total_dropped(self) -> int:
        """Generated texts dropped for any reason (added + total_dropped() == generated)."""
        return (
            self.dropped_empty
            + self.dropped_unchanged
            + self.dropped_duplicate
            + self.dropped_too_long
            + self.dropped_not_a_question
        )

    not_rewritable: int = Field(default=0, ge=0)
    """Chosen rows left alone because their prompt has nothing to rewrite (a chat prompt without a user message,
    or a prompt that does not follow dataset.promptTemplate)."""
