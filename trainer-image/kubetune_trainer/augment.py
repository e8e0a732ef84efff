"""dataset.augmentation: new training rows made by paraphrase and back-translation, before training.

Runs on each source's training rows after its evaluation rows were split off and before a dataset.mix interleaves
the sources (evaluation rows are never augmented: an evaluation on generated copies of itself would measure the
generator, not the adapter); a source's task prefix is kept out of the rewritten text and put back. The new rows are
cached on the output volume under a key of (training rows, augmentation settings, seed, model identities), so a
retry or a resumed run reuses them instead of generating again, and any change of those makes new ones. Only the
main process generates; the others wait for its cache file (the output volume is shared by every process of a run).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from datasets import Dataset, concatenate_datasets
from kubetune.api import FineTuneJobSpec
from kubetune.api.augmentation import (
    DEFAULT_PARAPHRASE_PROMPT,
    AugmentationModel,
    AugmentationResult,
    AugmentationSpec,
)
from kubetune.api.runtime import AUGMENTATION_TOKEN_ENV, ENV_HF_TOKEN

from .augment_generation import Generated, TextGenerator
from .augment_prompts import Rewritable, rewritable
from .data import SINGLE_SOURCE, SourceRows
from .data_formats import fingerprint
from .device import DeviceInfo
from .distributed import ProcessInfo
from .errors import InvalidInputError
from .model_loading import ModelLocation, locate_model

log = logging.getLogger(__name__)
CACHE_DIR = "augmentation"
CACHE_VERSION = 1  # part of the key: a change of how rows are generated or stored makes new ones
TRANSLATE_PROMPT = "Translate the following text into {language}. Reply with the translation only.\n\n{text}"
WAIT_LOG_SECONDS = 60
# Measured with SmolLM2-135M-Instruct: asked to rewrite "Where does the amber fox live?", it answered ("The amber fox
# lives in the forest") for 16 questions of 16, with both instructions tried; such a prompt would pair a made-up answer
# with the real one. So a question must stay a question (ASCII, full-width and Arabic question marks).
QUESTION_MARKS = ("?", "\uff1f", "\u061f")
Locations = dict[str, tuple[ModelLocation, str]]
"""Augmentation field ('paraphrase.model', ...) -> where its model loads from, and the field named in errors."""


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def _is_question(text: str) -> bool:
    return text.rstrip().endswith(QUESTION_MARKS)


def keep_outputs(source: str, outputs: list[Generated], dropped: Counter[str]) -> list[str]:
    """The outputs worth a new row: not empty, ended by the model, still a question when the source is one,
    different from the source and from each other. Every other one is counted in `dropped` under its reason."""
    kept: list[str] = []
    for output in outputs:
        if not output.text:
            dropped["empty"] += 1
        elif not output.finished:
            dropped["too_long"] += 1
        elif _is_question(source) and not _is_question(output.text):
            dropped["not_a_question"] += 1
        elif _same(output.text, source):
            dropped["unchanged"] += 1
        elif any(_same(output.text, other) for other in kept):
            dropped["duplicate"] += 1
        else:
            kept.append(output.text)
    return kept


def choose_rows(count: int, fraction: float, seed: int) -> list[int]:
    """Indices of the rows to augment: `fraction` of them (at least one of a non-empty source), chosen with `seed`,
    in row order."""
    if count == 0:
        return []
    chosen = max(1, round(count * fraction))
    return sorted(random.Random(seed).sample(range(count), chosen)) if chosen < count else list(range(count))


def token_env(model: AugmentationModel) -> str:
    """Where this model's read token is: the base model's variable when it is the base model, else its own."""
    return ENV_HF_TOKEN if model.is_base_model else AUGMENTATION_TOKEN_ENV[model.field]


def model_identity(location: ModelLocation) -> dict[str, Any]:
    """What names the weights: the Hub id and resolved commit, or a folder's config and weight files (name, size,
    modification time), so a model replaced on its volume makes new rows."""
    folder = Path(location.path)
    if not (folder / "config.json").is_file():
        return {"hub": location.path, "revision": location.revision}
    files = sorted(
        (path.name, path.stat().st_size, path.stat().st_mtime_ns)
        for path in folder.iterdir()
        if path.suffix in (".safetensors", ".bin", ".gguf", ".json", ".model")
    )
    return {"folder": location.path, "files": files}


def cache_key(sources: list[SourceRows], settings: AugmentationSpec, seed: int, identities: dict[str, Any]) -> str:
    described = {
        "version": CACHE_VERSION,
        "rows": {source.name: fingerprint(source.train) for source in sources},
        "settings": settings.model_dump(mode="json", by_alias=True),
        "seed": seed,
        "models": identities,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class _Target:
    """A chosen training row with a prompt to rewrite, and the source it belongs to."""

    source: str
    row: Rewritable


@dataclass
class _Kind:
    """Counts of one kind of augmentation while it runs."""

    kind: str
    model: str
    source_rows: int
    generated: int = 0
    not_rewritable: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    rows: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """(source name, new row)."""

    def result(self) -> AugmentationResult:
        return AugmentationResult(
            kind=self.kind,
            model=self.model,
            source_rows=self.source_rows,
            generated=self.generated,
            added=len(self.rows),
            dropped_empty=self.dropped["empty"],
            dropped_unchanged=self.dropped["unchanged"],
            dropped_duplicate=self.dropped["duplicate"],
            dropped_too_long=self.dropped["too_long"],
            dropped_not_a_question=self.dropped["not_a_question"],
            not_rewritable=self.not_rewritable,
        )


class _Generators:
    """At most one augmentation model in memory: the next different model frees the previous one first."""

    def __init__(self, device: DeviceInfo) -> None:
        self.device, self.current, self.loaded = device, None, None

    def get(self, location: ModelLocation, field_path: str) -> TextGenerator:
        if self.current is not None and self.loaded == location:
            return self.current
        self.close()
        self.current, self.loaded = TextGenerator(location, self.device, field_path), location
        return self.current

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = self.loaded = None


def _keep(target: _Target, generated: list[Generated], counts: _Kind) -> None:
    kept = keep_outputs(target.row.text, generated, counts.dropped)
    counts.rows.extend((target.source, target.row.rebuild(text)) for text in kept)


def _paraphrase(
    spec: AugmentationSpec, targets: list[_Target], counts: _Kind, generator: TextGenerator, seed: int
) -> None:
    settings = spec.paraphrase
    assert settings is not None
    texts = [target.row.text for target in targets]
    outputs = generator.generate(
        texts, settings.prompt or DEFAULT_PARAPHRASE_PROMPT, settings, seed, spec.batch_size, "paraphrase"
    )
    for target, generated in zip(targets, outputs, strict=True):
        counts.generated += len(generated)
        _keep(target, generated, counts)


def _back_translate(
    spec: AugmentationSpec,
    targets: list[_Target],
    counts: _Kind,
    generators: _Generators,
    locations: Locations,
    seed: int,
) -> None:
    settings = spec.back_translation
    assert settings is not None
    forward_prompt = TRANSLATE_PROMPT.replace("{language}", settings.pivot_language)
    forward_location, forward_field = locations["backTranslation.model"]
    forward = generators.get(forward_location, forward_field)
    texts = [target.row.text for target in targets]
    pivots = forward.generate(texts, forward_prompt, settings, seed, spec.batch_size, "back-translation (forward)")
    # A translation that is empty or cut off has nothing sound to translate back: dropped at the first step.
    pending: list[tuple[int, str]] = []
    for position, generated in enumerate(pivots):
        counts.generated += len(generated)
        for output in generated:
            if not output.text:
                counts.dropped["empty"] += 1
            elif not output.finished:
                counts.dropped["too_long"] += 1
            else:
                pending.append((position, output.text))
    reverse_location, reverse_field = locations.get("backTranslation.reverseModel", (forward_location, forward_field))
    reverse = generators.get(reverse_location, reverse_field)
    back_prompt = TRANSLATE_PROMPT.replace("{language}", settings.source_language)
    one_each = settings.model_copy(update={"copies": 1})
    backs = reverse.generate(
        [text for _, text in pending], back_prompt, one_each, seed + 1, spec.batch_size, "back-translation (back)"
    )
    by_target: dict[int, list[Generated]] = {}
    for (position, _), generated in zip(pending, backs, strict=True):
        by_target.setdefault(position, []).extend(generated)
    for position, generated in sorted(by_target.items()):
        _keep(targets[position], generated, counts)


def _targets(sources: list[SourceRows], fraction: float, seed: int) -> tuple[int, list[_Target]]:
    """How many rows were chosen (`fraction` of each source's, with the seed), and those with a prompt to rewrite."""
    chosen, targets = 0, []
    for source in sources:
        indices = choose_rows(len(source.train), fraction, seed)
        chosen += len(indices)
        for index in indices:
            found = rewritable(source.train[index], source.format, source.prompt_template, source.task_prefix)
            if found is not None:
                targets.append(_Target(source.name, found))
    return chosen, targets


def generate_rows(
    spec: FineTuneJobSpec, sources: list[SourceRows], locations: Locations, device: DeviceInfo
) -> tuple[list[tuple[str, dict[str, Any]]], list[AugmentationResult]]:
    """The new rows of every configured kind with their source's name, and what each kind added and dropped."""
    settings = spec.dataset.augmentation
    assert settings is not None
    seed = spec.training.seed if settings.seed is None else settings.seed
    chosen, targets = _targets(sources, settings.fraction, seed)
    models = {model.field: model for model in settings.models(spec.base_model)}
    generators = _Generators(device)
    rows: list[tuple[str, dict[str, Any]]] = []
    results: list[AugmentationResult] = []
    try:
        if settings.paraphrase is not None:
            counts = _Kind("paraphrase", models["paraphrase.model"].source.describe(), chosen)
            counts.not_rewritable = chosen - len(targets)
            if targets:  # no model is loaded when no chosen row has a prompt to rewrite
                _paraphrase(settings, targets, counts, generators.get(*locations["paraphrase.model"]), seed)
            rows.extend(counts.rows)
            results.append(counts.result())
        if settings.back_translation is not None:
            names = [
                models[key].source.describe()
                for key in ("backTranslation.model", "backTranslation.reverseModel")
                if key in models
            ]
            counts = _Kind("backTranslation", " -> ".join(names), chosen)
            counts.not_rewritable = chosen - len(targets)
            if targets:
                _back_translate(settings, targets, counts, generators, locations, seed + 2)
            rows.extend(counts.rows)
            results.append(counts.result())
    finally:
        generators.close()
    return rows, results


def _log_results(results: list[AugmentationResult], reused: bool) -> None:
    for result in results:
        if result.generated and not result.added:
            log.warning(
                "augmentation %s added no rows: every generated text was dropped (see the counts below); a larger "
                "instruct model, a higher maxNewTokens or another prompt may do better",
                result.kind,
            )
        log.info(
            "augmentation %s (%s)%s: %d rows chosen, %d texts generated, %d rows added; dropped %d empty, "
            "%d too long, %d no longer a question, %d unchanged, %d duplicate; %d rows without a prompt to rewrite",
            result.kind,
            result.model,
            " reused from the cache" if reused else "",
            result.source_rows,
            result.generated,
            result.added,
            result.dropped_empty,
            result.dropped_too_long,
            result.dropped_not_a_question,
            result.dropped_unchanged,
            result.dropped_duplicate,
            result.not_rewritable,
        )


def _write_atomically(path: Path, payload: dict[str, Any]) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
    os.replace(partial, path)


def _wait_for(path: Path) -> None:
    """Other processes wait for the main one's cache file (torchrun stops them all if the main process fails)."""
    waited = 0.0
    while not path.is_file():
        time.sleep(1.0)
        waited += 1.0
        if waited % WAIT_LOG_SECONDS == 0:
            log.info("waiting %.0f s for the main process to write %s", waited, path)


def augment_sources(
    spec: FineTuneJobSpec, sources: list[SourceRows], output_dir: Path, me: ProcessInfo, device: DeviceInfo
) -> tuple[list[SourceRows], list[AugmentationResult] | None]:
    """Each source with its augmented rows appended to its training rows (evaluation rows untouched), and the
    report; `sources` themselves and None when dataset.augmentation is not set."""
    settings = spec.dataset.augmentation
    if settings is None:
        return sources, None
    text = [source.name for source in sources if source.format == "text"]
    if text:
        which = "" if text == [SINGLE_SOURCE] else f" (dataset.mix source {', '.join(text)})"
        raise InvalidInputError(
            f"dataset.augmentation needs prompt/completion rows (format alpaca, qa or chat): format text{which} has "
            "no prompt to rewrite apart from what is trained; remove dataset.augmentation or use another format"
        )
    seed = spec.training.seed if settings.seed is None else settings.seed
    locations: Locations = {}
    for model in settings.models(spec.base_model):
        where = "baseModel" if model.is_base_model else model.path
        locations[model.field] = (locate_model(model.source, where, token_env(model)), where)
    identities = {key: model_identity(location) for key, (location, _) in locations.items()}
    folder = output_dir / CACHE_DIR
    cache = folder / f"{cache_key(sources, settings, seed, identities)}.json"
    reused = cache.is_file()
    if not reused and me.is_main:
        started = time.monotonic()
        rows, results = generate_rows(spec, sources, locations, device)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.json"):
            stale.unlink()  # another spec's or data's rows: never used by this run again
        by_source = {source.name: [row for name, row in rows if name == source.name] for source in sources}
        _write_atomically(cache, {"rows": by_source, "results": [result.to_wire() for result in results]})
        log.info(
            "augmentation: %d rows generated in %.1f s, cached in %s", len(rows), time.monotonic() - started, cache
        )
    elif not reused:
        _wait_for(cache)
    stored = json.loads(cache.read_text(encoding="utf-8"))
    results = [AugmentationResult.model_validate(result) for result in stored["results"]]
    _log_results(results, reused)
    return [_with_rows(source, stored["rows"].get(source.name) or []) for source in sources], results


def _with_rows(source: SourceRows, rows: list[dict[str, Any]]) -> SourceRows:
    if not rows:
        return source
    added = Dataset.from_list(rows, features=source.train.features)
    return replace(source, train=concatenate_datasets([source.train, added]))
