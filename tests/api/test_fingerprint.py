"""The training fingerprint: a finished adapter records it, so a field added later must not change it at the default
that trains as before, and must change it at any other value."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import pytest
from kubetune.api.finetunejob import NEUTRAL_DEFAULTS, PLACEMENT_FIELDS, FineTuneJobSpec

from .conftest import VALID_FTJ_SPEC


def _hash_without(spec: FineTuneJobSpec, paths: list[tuple[str, ...]]) -> str:
    """The fingerprint as an operator from before these fields computed it."""
    wire = spec.model_dump(mode="json", by_alias=True, exclude=set(PLACEMENT_FIELDS))
    for *parents, leaf in paths:
        holder = wire
        for key in parents:
            holder = holder[key]
        del holder[leaf]
    return "sha256:" + hashlib.sha256(json.dumps(wire, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _with(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(VALID_FTJ_SPEC)
    holder = spec
    for key in path[:-1]:
        holder = holder.setdefault(key, {})
    holder[path[-1]] = value
    return spec


def test_neutral_defaults_are_the_models_defaults():
    """The list cannot drift from the models: each entry is what an empty spec gets."""
    wire = FineTuneJobSpec.model_validate(VALID_FTJ_SPEC).model_dump(mode="json", by_alias=True)
    for path, neutral in NEUTRAL_DEFAULTS.items():
        value: Any = wire
        for key in path:
            value = value[key]
        assert value == neutral, f"{'.'.join(path)} defaults to {value!r}, NEUTRAL_DEFAULTS says {neutral!r}"


def test_fields_at_their_neutral_default_keep_the_old_fingerprint():
    spec = FineTuneJobSpec.model_validate(VALID_FTJ_SPEC)
    assert spec.fingerprint() == _hash_without(spec, list(NEUTRAL_DEFAULTS))


@pytest.mark.parametrize("path", list(NEUTRAL_DEFAULTS), ids=".".join)
def test_any_other_value_changes_the_fingerprint(path: tuple[str, ...]):
    two_sources = [
        {"name": "a", "configMap": {"name": "data", "key": "a.jsonl"}},
        {"name": "b", "configMap": {"name": "data", "key": "b.jsonl"}},
    ]
    changed = {
        ("resources", "nodes"): 2,
        ("training", "neftuneNoiseAlpha"): 5.0,
        ("dataset", "mix"): two_sources,
        ("dataset", "mixUntil"): "all_exhausted",
        ("training", "earlyStopping"): {"patience": 2},
        ("training", "lossWeights"): {"terms": ["insulin"]},
        ("dataset", "augmentation"): {"paraphrase": {"copies": 2}},
        ("evaluation", "humanEvalSamples"): 8,
    }.get(path, True if NEUTRAL_DEFAULTS[path] is False else None)
    assert changed is not None, f"give {'.'.join(path)} a changed value in this test"
    extra: dict[str, Any] = {}
    if path == ("resources", "nodes"):
        extra = {"output": {"accessMode": "ReadWriteMany"}}
    if path == ("training", "loadBestModelAtEnd"):
        extra = {"training": {"evalSteps": 10, "saveSteps": 10, "loadBestModelAtEnd": True}}
    if path == ("training", "earlyStopping"):
        extra = {"training": {"evalSteps": 10, "saveSteps": 10, "earlyStopping": changed}}
    if path[0] == "dataset":  # a mix replaces the single source: mixUntil is compared on two mixes of one data
        mix = {"mix": two_sources}
        base_spec = VALID_FTJ_SPEC if path[1] == "mix" else VALID_FTJ_SPEC | {"dataset": mix}
        other_spec = VALID_FTJ_SPEC | {"dataset": mix | ({path[1]: changed} if path[1] != "mix" else {})}
        base, other = FineTuneJobSpec.model_validate(base_spec), FineTuneJobSpec.model_validate(other_spec)
        assert base.fingerprint() != other.fingerprint()
        return
    base = FineTuneJobSpec.model_validate(VALID_FTJ_SPEC)
    other = FineTuneJobSpec.model_validate(_with(path, changed) | extra)
    assert base.fingerprint() != other.fingerprint()
