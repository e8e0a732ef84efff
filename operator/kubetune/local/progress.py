"""A one-line progress bar for local training, fed from the trainer's progress.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TextIO

from kubetune.api import Progress

BAR_WIDTH = 24


def read_progress(path: Path) -> Progress | None:
    """The newest progress the trainer wrote, or None before its first report (or mid-write)."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        return Progress.model_validate(payload.get("progress", {}))
    except (OSError, ValueError):
        return None


def _duration(seconds: int | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def render(progress: Progress) -> str:
    filled = BAR_WIDTH * progress.percent // 100
    loss = f"{progress.loss:.3f}" if progress.loss is not None else "-"
    text = (
        f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {progress.percent:3d}% "
        f"step {progress.step}/{progress.total_steps} loss {loss} eta {_duration(progress.eta_seconds)}"
    )
    if progress.eval_loss is not None:
        text += f" eval_loss {progress.eval_loss:.3f}"
    return text


class ProgressLine:
    """Redraws one terminal line; on a pipe (CI, `make demo | tee`) prints a line per change instead."""

    def __init__(self, stream: TextIO = sys.stdout) -> None:
        self.stream = stream
        self.last = ""
        self.interactive = stream.isatty()

    def show(self, progress: Progress | None) -> None:
        if progress is None:
            return
        text = render(progress)
        if text == self.last:
            return
        if self.interactive:
            self.stream.write("\r" + text.ljust(len(self.last)))
        elif progress.step != 0 or not self.last:
            self.stream.write(text + "\n")
        self.stream.flush()
        self.last = text

    def close(self) -> None:
        if self.interactive and self.last:
            self.stream.write("\n")
            self.stream.flush()
