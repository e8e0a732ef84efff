"""The data step of the flow: load each source, format rows, choose the evaluation rows, cap the size, mix.

A dataset is read as a list of sources (`SourceRows`, one for a plain dataset, one per `dataset.mix` entry), each
formatted, prefixed and split on its own; a mix then interleaves the training rows (data_mix.py). Steps that change
training rows of a source (augmentation) fit between `prepare_sources` and `combine_sources`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, concatenate_datasets
from kubetune.api import DatasetSpec
from kubetune.api.finetunejob import DatasetSource, MixSource

from .data_formats import every_assistant_turn, fingerprint, format_rows, limit_rows, split_for_eval
from .data_mix import MixedRows, check_same_kind, mix_sources
from .data_sources import load_raw_data
from .errors import InvalidInputError

log = logging.getLogger(__name__)

SINGLE_SOURCE = "dataset"
"""Name of the one source of a dataset without mix, in logs (such a source is never reported per source)."""


@dataclass(frozen=True)
class SourceRows:
    """One source's formatted (and task-prefixed) rows, split into training and evaluation rows; chat rows are
    still whole conversations."""

    name: str
    train: Dataset
    eval: Dataset | None
    format: str
    prompt_template: str | None
    skipped_rows: int
    description: str
    weight: float = 1.0
    task_prefix: str | None = None


@dataclass(frozen=True)
class PreparedData:
    """Training and evaluation rows in trl's format, and the facts the outputs record about them.

    `eval` holds every evaluation row (with a mix, all sources' rows together); `eval_by_source` (a mix only) holds
    each source's own, which the trainer evaluates apart (eval_<name>_loss)."""

    train: Dataset
    eval: Dataset | None
    format: str
    prompt_template: str | None
    skipped_rows: int
    source: str
    fingerprint: str
    eval_by_source: dict[str, Dataset] = field(default_factory=dict)
    mix: MixedRows | None = None
    sources: tuple[SourceRows, ...] = ()

    @property
    def trainer_eval(self) -> Dataset | dict[str, Dataset] | None:
        """What the Trainer evaluates: each mix source apart (a dict), else the one evaluation set."""
        return dict(self.eval_by_source) if self.eval_by_source else self.eval


def prepare_data(
    spec: DatasetSpec, seed: int, download_dir: Path | None = None, *, all_assistant_turns: bool = True
) -> PreparedData:
    """Everything between the spec's dataset section and the rows SFTTrainer gets. With `all_assistant_turns`
    (completion-only loss) a chat conversation gives one row per assistant turn, after the split."""
    return combine_sources(spec, prepare_sources(spec, seed, download_dir), seed, all_assistant_turns)


def prepare_sources(spec: DatasetSpec, seed: int, download_dir: Path | None = None) -> list[SourceRows]:
    """Each source of the dataset loaded, formatted, prefixed and split (one element without a mix)."""
    if spec.mix is None:
        return [
            prepare_source(
                spec,
                name=SINGLE_SOURCE,
                fmt=spec.format,
                template=spec.prompt_template,
                eval_fraction=spec.eval_fraction,
                eval_split=spec.eval_split,
                max_samples=spec.max_samples,
                skip_invalid=spec.skip_invalid_rows,
                seed=seed,
                download_dir=download_dir,
            )
        ]
    return [_prepare_mix_source(spec, source, seed, download_dir) for source in spec.mix]


def _prepare_mix_source(spec: DatasetSpec, source: MixSource, seed: int, download_dir: Path | None) -> SourceRows:
    """A mix source, its unset settings taken from the dataset; every error names the source."""
    try:
        return prepare_source(
            source,
            name=source.name,
            fmt=source.format or spec.format,
            template=source.prompt_template or spec.prompt_template,
            eval_fraction=spec.eval_fraction if source.eval_fraction is None else source.eval_fraction,
            eval_split=source.eval_split,
            max_samples=source.max_samples,
            skip_invalid=spec.skip_invalid_rows,
            seed=seed,
            download_dir=download_dir / source.name if download_dir is not None else None,
            weight=source.weight,
            task_prefix=source.task_prefix,
            where=f"dataset.mix[{source.name}]",
        )
    except InvalidInputError as error:
        if f"dataset.mix[{source.name}]" in str(error):
            raise
        raise InvalidInputError(f"dataset.mix source {source.name!r}: {error}") from error


def prepare_source(
    source: DatasetSource,
    *,
    name: str,
    fmt: str | None,
    template: str | None,
    eval_fraction: float,
    eval_split: str | None,
    max_samples: int | None,
    skip_invalid: bool,
    seed: int,
    download_dir: Path | None = None,
    weight: float = 1.0,
    task_prefix: str | None = None,
    where: str = "dataset",
) -> SourceRows:
    """Load one source, format (and prefix) its rows, hold out its evaluation rows, cap its training rows."""
    raw = load_raw_data(source, download_dir, eval_split=eval_split, where=where)
    single = where == "dataset"
    what = "dataset" if single else where
    train = format_rows(raw.train, fmt, template, skip_invalid=skip_invalid, what=what, task_prefix=task_prefix)
    skipped = train.skipped_rows
    if raw.eval is not None:
        held_out = format_rows(
            raw.eval,
            train.format,
            template,
            skip_invalid=skip_invalid,
            what="evaluation split" if single else f"{where} evaluation split",
            task_prefix=task_prefix,
        )
        train_rows, eval_rows = train.dataset, held_out.dataset
        skipped += held_out.skipped_rows
    else:
        train_rows, eval_rows = split_for_eval(train.dataset, eval_fraction, seed)
    train_rows = limit_rows(train_rows, max_samples, seed)
    for example in train.skipped_examples:
        log.warning("%s: skipped invalid %s", name, example)
    if skipped:
        log.warning("%s: skipped %d row(s) that do not fit format %s", name, skipped, train.format)
    return SourceRows(
        name=name,
        train=train_rows,
        eval=eval_rows,
        format=train.format,
        prompt_template=train.prompt_template,
        skipped_rows=skipped,
        description=raw.description,
        weight=weight,
        task_prefix=task_prefix,
    )


def combine_sources(
    spec: DatasetSpec, sources: list[SourceRows], seed: int, all_assistant_turns: bool = True
) -> PreparedData:
    """The rows the trainer gets: the one source's, or the sources mixed by weight (data_mix.py)."""
    mix = None
    if spec.mix is None:
        (only,) = sources
        train_rows, eval_rows, by_source = only.train, only.eval, {}
        fmt, template, description = only.format, only.prompt_template, only.description
    else:
        fmt = check_same_kind({source.name: source.format for source in sources})
        mix = mix_sources(sources, seed, spec.mix_until or "first_exhausted", spec.max_samples)
        train_rows = mix.train
        by_source = {source.name: source.eval for source in sources if source.eval is not None and len(source.eval)}
        eval_rows = concatenate_datasets(list(by_source.values())) if by_source else None
        templates = {source.prompt_template for source in sources}
        template = templates.pop() if len(templates) == 1 else None
        description = spec.describe()
    if fmt == "chat" and all_assistant_turns:
        conversations = len(train_rows)
        train_rows = every_assistant_turn(train_rows)
        eval_rows = every_assistant_turn(eval_rows) if eval_rows is not None else None
        by_source = {name: every_assistant_turn(rows) for name, rows in by_source.items()}
        log.info("chat: %d conversations give %d assistant turns to train", conversations, len(train_rows))
    log.info(
        "dataset %s: format %s, %d training rows, %d evaluation rows",
        description,
        fmt,
        len(train_rows),
        len(eval_rows) if eval_rows is not None else 0,
    )
    return PreparedData(
        train=train_rows,
        eval=eval_rows,
        format=fmt,
        prompt_template=template,
        skipped_rows=sum(source.skipped_rows for source in sources),
        source=description,
        fingerprint=fingerprint(train_rows, eval_rows),
        eval_by_source=by_source,
        mix=mix,
        sources=tuple(sources),
    )
