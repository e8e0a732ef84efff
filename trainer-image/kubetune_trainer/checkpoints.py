"""Checkpoints that survive preemption: only checkpoints marked complete are ever resumed from.

The Trainer writes `checkpoint-N` in place, so a pod killed mid-save leaves a folder that looks like a
checkpoint. A callback writes a marker after the save has finished; on start, unmarked folders are
deleted and the newest marked one is resumed.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from transformers import TrainerCallback

log = logging.getLogger(__name__)

COMPLETE_MARKER = "kubetune-complete"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_step(path: Path) -> int | None:
    match = _CHECKPOINT.match(path.name)
    return int(match.group(1)) if match and path.is_dir() else None


def list_checkpoints(checkpoints_dir: Path) -> list[tuple[int, Path]]:
    """All checkpoint folders, oldest step first."""
    if not checkpoints_dir.is_dir():
        return []
    found = [(step, path) for path in checkpoints_dir.iterdir() if (step := checkpoint_step(path)) is not None]
    return sorted(found)


def is_complete(path: Path) -> bool:
    return (path / COMPLETE_MARKER).is_file()


def newest_complete_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The checkpoint to resume from, or None to start from scratch."""
    complete = [path for _, path in list_checkpoints(checkpoints_dir) if is_complete(path)]
    return complete[-1] if complete else None


def remove_incomplete_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Delete half-written checkpoints so neither we nor the Trainer's rotation mistakes them for real ones."""
    removed = []
    for _, path in list_checkpoints(checkpoints_dir):
        if not is_complete(path):
            log.warning("removing incomplete checkpoint %s (the previous run stopped while writing it)", path)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def mark_complete(path: Path) -> None:
    """Write the marker atomically (temp file + rename) once every file of the checkpoint is on disk."""
    temporary = path / f".{COMPLETE_MARKER}.tmp"
    temporary.write_text("complete\n", encoding="utf-8")
    temporary.replace(path / COMPLETE_MARKER)


class CheckpointMarker(TrainerCallback):
    """Marks each checkpoint complete right after the Trainer has saved it (main process only)."""

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if path.is_dir():
                mark_complete(path)
        return control
