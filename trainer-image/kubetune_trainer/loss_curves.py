"""The loss curves as a picture beside the model card: train and eval loss against the optimizer step, read from
the Trainer's log history (what it logged every `loggingSteps` and at each evaluation), drawn with matplotlib's
file-only Agg backend (no display in a pod)."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PICTURE_DPI = 100
PICTURE_INCHES = (7.0, 4.0)  # 700 x 400 pixels: readable on the Hub and in a terminal image viewer, ~30 KB


@dataclass(frozen=True)
class LossCurves:
    train: list[tuple[int, float]]
    eval: list[tuple[int, float]]


def loss_points(log_history: Iterable[Mapping[str, Any]]) -> LossCurves:
    """(step, loss) pairs: `loss` entries are the training loss averaged since the previous log line, `eval_loss`
    entries one evaluation each. The end-of-run summary (`train_loss`) and non-finite values are left out."""
    train, evaluation = [], []
    for entry in log_history:
        step = entry.get("step")
        if step is None:
            continue
        for key, points in (("loss", train), ("eval_loss", evaluation)):
            value = entry.get(key)
            if isinstance(value, int | float) and math.isfinite(value):
                points.append((int(step), float(value)))
    return LossCurves(train, evaluation)


def draw_loss_curves(log_history: Iterable[Mapping[str, Any]], path: Path) -> bool:
    """Write the PNG at `path`; False (and no file) when nothing was logged to draw."""
    curves = loss_points(log_history)
    if not curves.train and not curves.eval:
        log.info("no loss was logged (loggingSteps above the steps run?): no loss-curve picture")
        return False
    import matplotlib

    matplotlib.use("Agg", force=True)  # before pyplot: never look for a display
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=PICTURE_INCHES, dpi=PICTURE_DPI)
    try:
        for label, points, style in (("train loss", curves.train, "-"), ("eval loss", curves.eval, "o-")):
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
