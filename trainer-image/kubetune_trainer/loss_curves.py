"""The loss curves as a picture beside the model card: train and eval loss against the optimizer step, read from
the Trainer's log history (what it logged every `loggingSteps` and at each evaluation), drawn with matplotlib's
file-only Agg backend (no display in a pod)."""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PICTURE_DPI = 100
PICTURE_INCHES = (7.0, 4.0)  # 700 x 400 pixels: readable on the Hub and in a terminal image viewer, ~30 KB


@dataclass(frozen=True)
class LossCurves:
    train: list[tuple[int, float]]
    eval: list[tuple[int, float]]
    sources: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    """dataset.mix: each source's own eval loss (`eval_<source>_loss`), beside the overall one."""


SOURCE_EVAL = re.compile(r"eval_(.+)_loss")


def loss_points(log_history: Iterable[Mapping[str, Any]]) -> LossCurves:
    """(step, loss) pairs: `loss` entries are the training loss averaged since the previous log line, `eval_loss`
    entries one evaluation each. The end-of-run summary (`train_loss`) and non-finite values are left out."""
    curves = LossCurves([], [])
    for entry in log_history:
        step = entry.get("step")
        if step is None:
            continue
        for key, value in entry.items():
            if not isinstance(value, int | float) or not math.isfinite(value):
                continue
            source = SOURCE_EVAL.fullmatch(key)
            if key == "loss":
                curves.train.append((int(step), float(value)))
            elif key == "eval_loss":
                curves.eval.append((int(step), float(value)))
            elif source is not None:
                curves.sources.setdefault(source.group(1), []).append((int(step), float(value)))
    return curves


def draw_loss_curves(log_history: Iterable[Mapping[str, Any]], path: Path) -> bool:
    """Write the PNG at `path`; False (and no file) when nothing was logged to draw."""
    curves = loss_points(log_history)
    if not curves.train and not curves.eval and not curves.sources:
        log.info("no loss was logged (loggingSteps above the steps run?): no loss-curve picture")
        return False
    import matplotlib

    matplotlib.use("Agg", force=True)  # before pyplot: never look for a display
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=PICTURE_INCHES, dpi=PICTURE_DPI)
    try:
        lines = [("train loss", curves.train, "-"), ("eval loss", curves.eval, "o-")]
        lines += [(f"eval loss: {name}", points, "x--") for name, points in sorted(curves.sources.items())]
        for label, points, style in lines:
            if points:
                steps, losses = zip(*points, strict=True)
                axes.plot(steps, losses, style, label=label, markersize=4)
        axes.set_xlabel("step")
        axes.set_ylabel("loss")
        axes.set_title("Loss curves")
        axes.grid(alpha=0.3)
        axes.legend()
        figure.tight_layout()
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        figure.savefig(temporary, format="png", metadata={"Software": None})  # no version stamp: same run, same bytes
        temporary.replace(path)
    finally:
        pyplot.close(figure)
    return True
