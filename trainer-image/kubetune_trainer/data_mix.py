"""Multi-task mixing: the training rows of several sources interleaved by weight, reproducibly by seed.

`datasets.interleave_datasets` draws each row from a source chosen with the sources' probabilities (a numpy
generator seeded with training.seed), so the same spec and data give the same rows in the same order. Its stopping
strategy (dataset.mixUntil) decides how many rows a mix has; the rows drawn from each source are counted for the
report.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from datasets import Dataset, interleave_datasets

from .data_formats import limit_rows
from .errors import InvalidInputError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

log = logging.getLogger(__name__)

SOURCE_COLUMN = "kubetune_source"
ROW_KINDS = {"alpaca": "prompt/completion text", "qa": "prompt/completion text", "chat": "chat", "text": "text"}


class MixInput(Protocol):
    """What mixing needs of a source (data.SourceRows has it)."""

    name: str
    train: Dataset
    weight: float


@dataclass(frozen=True)
class MixedRows:
    """The mixed training rows and how many came from each source (one epoch of the mix)."""

    train: Dataset
    probabilities: dict[str, float]
    rows_per_source: dict[str, int]
    stopping_strategy: str


def check_same_kind(formats: Mapping[str, str]) -> str:
    """Sources can be mixed only when their rows have one shape: chat conversations, plain text, or prompt/completion
    text (alpaca and qa). Returns the format the mix is recorded with (alpaca when alpaca and qa meet)."""
    kinds = {ROW_KINDS[fmt] for fmt in formats.values()}
    if len(kinds) > 1:
        listed = ", ".join(f"{name} ({fmt}: {ROW_KINDS[fmt]})" for name, fmt in formats.items())
        raise InvalidInputError(
            f"dataset.mix: sources give rows of different kinds and cannot be trained together: {listed}; mix chat "
            "with chat, text with text, alpaca with qa (convert a source, or train separate jobs)"
        )
    present = set(formats.values())
    return "alpaca" if present == {"alpaca", "qa"} else present.pop()


def probabilities_of(weights: Mapping[str, float]) -> dict[str, float]:
    """Each source's sampling probability: its weight over the sum of weights."""
    total = sum(weights.values())
    return {name: weight / total for name, weight in weights.items()}


def mix_sources(
    sources: Sequence[MixInput], seed: int, stopping_strategy: str = "first_exhausted", max_rows: int | None = None
) -> MixedRows:
    """Interleave the sources' training rows by weight with `seed` (at most `max_rows` of them: dataset.maxSamples,
    the first after a seeded shuffle); sources without training rows are refused."""
    empty = [source.name for source in sources if len(source.train) == 0]
    if empty:
        raise InvalidInputError(
            f"dataset.mix: source(s) {', '.join(empty)} have no training rows left after the evaluation split "
            "(lower their evalFraction or add rows)"
        )
    probabilities = probabilities_of({source.name: source.weight for source in sources})
    labelled = [source.train.add_column(SOURCE_COLUMN, [source.name] * len(source.train)) for source in sources]
    mixed = interleave_datasets(
        labelled,
        probabilities=[probabilities[source.name] for source in sources],
        seed=seed,
        stopping_strategy=stopping_strategy,  # type: ignore[arg-type]
    )
    mixed = limit_rows(mixed, max_rows, seed)
    counts = Counter(mixed[SOURCE_COLUMN])
    rows = {source.name: counts.get(source.name, 0) for source in sources}
    log.info(
        "dataset.mix (%s, seed %d): %d rows; %s",
        stopping_strategy,
        seed,
        len(mixed),
        ", ".join(
            f"{name} {count} of {len(source.train)} (p={probabilities[name]:.3f})"
            for (name, count), source in zip(rows.items(), sources, strict=True)
        ),
    )
    unused = [f"{s.name} ({rows[s.name]} of {len(s.train)})" for s in sources if rows[s.name] < len(s.train) / 2]
    if unused and stopping_strategy == "first_exhausted" and max_rows is None:
        log.warning(
            "dataset.mix: the mix ended when its first source ran out, leaving most rows of %s untrained; "
            "dataset.mixUntil all_exhausted repeats the small sources instead",
            ", ".join(unused),
        )
    return MixedRows(mixed.remove_columns(SOURCE_COLUMN), probabilities, rows, stopping_strategy)
