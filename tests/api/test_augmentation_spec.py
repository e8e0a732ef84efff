"""dataset.augmentation: its validation names the field and the fix, its defaults resolve to the base model, and
its settings are part of the training fingerprint."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubetune.api import FineTuneJobSpec, format_validation_error
from pydantic import ValidationError

from .conftest import VALID_FTJ_SPEC


def _spec(augmentation: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(VALID_FTJ_SPEC)
    spec["dataset"]["augmentation"] = augmentation
    return spec


def _error(augmentation: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        FineTuneJobSpec.model_validate(_spec(augmentation))
    return format_validation_error(caught.value, root="spec")


BACK = {"sourceLanguage": "Korean", "pivotLanguage": "English"}


@pytest.mark.parametrize(
    ("augmentation", "expected"),
    [
        ({}, "augmentation needs paraphrase, backTranslation or both"),
        ({"paraphrase": {"copies": 3, "temperature": 0}}, "copies 3 needs temperature > 0"),
        ({"paraphrase": {"prompt": "Say it again please"}}, "must contain {text}"),
        ({"backTranslation": {"sourceLanguage": "English", "pivotLanguage": "english"}}, "must differ"),
        ({"backTranslation": {"pivotLanguage": "English"}}, "sourceLanguage"),
        ({"paraphrase": {}, "fraction": 0}, "fraction"),
        ({"paraphrase": {"copies": 17}}, "copies"),
        ({"paraphrase": {"model": {"name": "org/a", "pvc": {"claimName": "m"}}}}, "exactly one of name, pvc"),
    ],
    ids=[
        "nothing",
        "greedy-copies",
        "prompt-without-text",
        "same-language",
        "no-source-language",
        "fraction-0",
        "too-many-copies",
        "two-model-sources",
    ],
)
def test_bad_augmentation_is_refused_with_the_field_and_the_rule(augmentation, expected):
    message = _error(augmentation)
    assert expected in message
    assert "augmentation" in message


def test_models_default_to_the_base_model_and_name_their_fields():
    spec = FineTuneJobSpec.model_validate(
        _spec({"paraphrase": {}, "backTranslation": {**BACK, "reverseModel": {"name": "org/back"}}})
    )
    models = spec.dataset.augmentation.models(spec.base_model)
    assert [(m.path, m.source.describe(), m.is_base_model) for m in models] == [
        ("spec.dataset.augmentation.paraphrase.model", "org/model", True),
        ("spec.dataset.augmentation.backTranslation.model", "org/model", True),
        ("spec.dataset.augmentation.backTranslation.reverseModel", "org/back", False),
    ]


def test_back_translation_decodes_greedily_and_paraphrase_samples_by_default():
    spec = FineTuneJobSpec.model_validate(_spec({"paraphrase": {}, "backTranslation": BACK}))
    assert spec.dataset.augmentation.back_translation.temperature == 0
    assert spec.dataset.augmentation.paraphrase.temperature > 0


def test_every_augmentation_setting_is_part_of_the_fingerprint():
    def fingerprint(augmentation: dict[str, Any]) -> str:
        return FineTuneJobSpec.model_validate(_spec(augmentation)).fingerprint()

    base = fingerprint({"paraphrase": {"copies": 2}})
    assert fingerprint({"paraphrase": {"copies": 3}}) != base
    assert fingerprint({"paraphrase": {"copies": 2}, "seed": 7}) != base
    assert fingerprint({"paraphrase": {"copies": 2, "model": {"name": "org/other"}}}) != base
    assert fingerprint({"paraphrase": {"copies": 2}}) == base
