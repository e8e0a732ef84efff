"""Checkpoints that survive preemption: only complete checkpoints of this very run are ever resumed from.

The Trainer writes `checkpoint-N` in place, so a pod killed mid-save leaves a folder that looks like a
checkpoint. A callback writes a marker after the save has finished; on start, unmarked folders are
deleted and the newest marked one is resumed.

The marker records the run's identity (the spec hash and the dataset fingerprint). A checkpoint of another
spec or other data in the same folder (an older run of the same name, a shared claim) is never resumed: it
is deleted before training, since the Trainer would otherwise write its own `checkpoint-N` over it.
"""

from __future__ import annotations

import json
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


def checkpoint_identity(path: Path) -> dict[str, str] | None:
    """The run identity recorded in a complete checkpoint's marker; None when unmarked or from before identities
    were recorded (such a checkpoint cannot be shown to belong to this run)."""
    try:
        recorded = json.loads((path / COMPLETE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return recorded if isinstance(recorded, dict) else None


def newest_complete_checkpoint(checkpoints_dir: Path, identity: dict[str, str] | None = None) -> Path | None:
    """The checkpoint to resume from, or None to start from scratch. With `identity`, only a checkpoint
    written by a run of that identity qualifies."""
    complete = [
        path
        for _, path in list_checkpoints(checkpoints_dir)
        if is_complete(path) and (identity is None or checkpoint_identity(path) == identity)
    ]
    return complete[-1] if complete else None


def remove_foreign_checkpoints(checkpoints_dir: Path, identity: dict[str, str]) -> list[Path]:
    """Delete complete checkpoints of another spec or other data: never resumed, and in the way of this run's own."""
    removed = []
    for _, path in list_checkpoints(checkpoints_dir):
        recorded = checkpoint_identity(path)
        if is_complete(path) and recorded != identity:
            log.warning(
                "removing checkpoint %s: it belongs to another run (spec %s, data %s; this run: spec %s, data %s)",
                path,
                (recorded or {}).get("specHash", "unknown"),
                (recorded or {}).get("datasetFingerprint", "unknown"),
                identity.get("specHash"),
                identity.get("datasetFingerprint"),
            )
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def remove_incomplete_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Delete half-written checkpoints so neither we nor the Trainer's rotation mistakes them for real ones."""
    removed = []
    for _, path in list_checkpoints(checkpoints_dir):
        if not is_complete(path):
            log.warning("removing incomplete checkpoint %s (the previous run stopped while writing it)", path)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def mark_complete(path: Path, identity: dict[str, str] | None = None) -> None:
    """Write the marker (with the run's identity) atomically once every file of the checkpoint is on disk."""
    temporary = path / f".{COMPLETE_MARKER}.tmp"
    temporary.write_text(json.dumps(identity or {}, sort_keys=True) + "\n", encoding="utf-8")
    temporary.replace(path / COMPLETE_MARKER)


class CheckpointMarker(TrainerCallback):
    """Marks each checkpoint complete, with the run's identity, right after the Trainer has saved it (main
    process only)."""

    def __init__(self, identity: dict[str, str] | None = None) -> None:
        self.identity = identity or {}

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if path.is_dir():
                mark_complete(path, self.identity)
        return control
