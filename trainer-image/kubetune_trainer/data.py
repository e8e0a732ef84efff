"""The data step of the flow: load the source, format rows, choose the evaluation rows, cap the size."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset
from kubetune.api import DatasetSpec

from .data_formats import every_assistant_turn, fingerprint, format_rows, limit_rows, split_for_eval
from .data_sources import load_raw_data

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedData:
    """Training and evaluation rows in trl's format, and the facts the outputs record about them."""

    train: Dataset
    eval: Dataset | None
    format: str
    prompt_template: str | None
    skipped_rows: int
    source: str
    fingerprint: str


def prepare_data(
    spec: DatasetSpec, seed: int, download_dir: Path | None = None, *, all_assistant_turns: bool = True
) -> PreparedData:
    """Everything between the spec's dataset section and the rows SFTTrainer gets. With `all_assistant_turns`
    (completion-only loss) a chat conversation gives one row per assistant turn, after the split."""
    raw = load_raw_data(spec, download_dir)
    train = format_rows(raw.train, spec.format, spec.prompt_template, skip_invalid=spec.skip_invalid_rows)
    skipped = train.skipped_rows
    if raw.eval is not None:
        held_out = format_rows(
            raw.eval, train.format, spec.prompt_template, skip_invalid=spec.skip_invalid_rows, what="evaluation split"
        )
        train_rows, eval_rows = train.dataset, held_out.dataset
        skipped += held_out.skipped_rows
    else:
        train_rows, eval_rows = split_for_eval(train.dataset, spec.eval_fraction, seed)
    train_rows = limit_rows(train_rows, spec.max_samples, seed)
    if train.format == "chat" and all_assistant_turns:
        conversations = len(train_rows)
        train_rows = every_assistant_turn(train_rows)
        eval_rows = every_assistant_turn(eval_rows) if eval_rows is not None else None
        log.info("chat: %d conversations give %d assistant turns to train", conversations, len(train_rows))
    for example in train.skipped_examples:
        log.warning("skipped invalid %s", example)
    if skipped:
        log.warning("skipped %d row(s) that do not fit format %s", skipped, train.format)
    log.info(
        "dataset %s: format %s, %d training rows, %d evaluation rows",
        raw.description,
        train.format,
        len(train_rows),
        len(eval_rows) if eval_rows is not None else 0,
    )
    return PreparedData(
        train=train_rows,
        eval=eval_rows,
        format=train.format,
        prompt_template=train.prompt_template,
        skipped_rows=skipped,
        source=raw.description,
        fingerprint=fingerprint(train_rows, eval_rows),
    )
