"""Progress reporting: a trainer callback that sends `Progress` to the trainer's report ConfigMap or a file.

Reports are throttled (default: at most one every 30 s) so that a fast loop, or hundreds of trainers at once,
cannot flood the API server (every report is a status write and a watch event to every watcher of FineTuneJobs);
the first and the last state are always sent. Only the main process of a distributed run reports.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from kubetune.api import Progress, TrainingMetrics
from kubetune.api.runtime import PROGRESS_FILE
from transformers import TrainerCallback

from .kube_status import KubeStatusClient
from .results_report import results_patch

log = logging.getLogger(__name__)

MIN_REPORT_INTERVAL_SECONDS = 30.0  # one status write per trainer per 30 s: 500 trainers = 17 writes/s
RESULTS_PATCH_TIMEOUT_SECONDS = 30.0  # up to ~1 MiB once per run, not a few hundred bytes


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    """Readers never see a half-written file: write a sibling temp file, then rename over the target."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    temporary.replace(path)


class ProgressSink(Protocol):
    """Where progress goes: the Kubernetes status or a file."""

    def report(self, progress: Progress) -> None: ...

    def finish(self, progress: Progress, metrics: TrainingMetrics) -> None: ...

    def results(self, files: dict[str, Path]) -> None: ...


class KubeStatusSink:
    """Progress and final metrics into the trainer's report ConfigMap (the operator copies them into the status)."""

    def __init__(self, client: KubeStatusClient) -> None:
        self.client = client

    def report(self, progress: Progress) -> None:
        self.client.patch_status({"progress": progress.to_wire()})

    def finish(self, progress: Progress, metrics: TrainingMetrics) -> None:
        self.client.patch_status({"progress": progress.to_wire(), "metrics": metrics.to_wire()})

    def results(self, files: dict[str, Path]) -> None:
        """The result files, for `kubetune results` (up to the ConfigMap's size budget: results_report)."""
        if self.client.patch(results_patch(files), timeout=RESULTS_PATCH_TIMEOUT_SECONDS):
            log.info("result files copied to configmap %s/%s", self.client.namespace, self.client.name)


class FileSink:
    """Progress into `<output>/progress.json` when not running in a pod (local runs, tests)."""

    def __init__(self, output_dir: Path) -> None:
        self.path = output_dir / PROGRESS_FILE

    def report(self, progress: Progress) -> None:
        write_json_atomically(self.path, {"progress": progress.to_wire()})

    def finish(self, progress: Progress, metrics: TrainingMetrics) -> None:
        write_json_atomically(self.path, {"progress": progress.to_wire(), "metrics": metrics.to_wire()})

    def results(self, files: dict[str, Path]) -> None:
        """Nothing to copy: outside a pod the files are read where they lie."""


def choose_sink(output_dir: Path) -> ProgressSink:
    """The report ConfigMap when the pod has a service account token and the ConfigMap's name, else the file."""
    client = KubeStatusClient.from_environment()
    if client is not None:
        log.info("reporting progress to configmap %s/%s", client.namespace, client.name)
        return KubeStatusSink(client)
    return FileSink(output_dir)


class ProgressCallback(TrainerCallback):
    """Turns Trainer events into throttled `Progress` reports."""

    def __init__(
        self,
        sink: ProgressSink,
        min_interval: float = MIN_REPORT_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink = sink
        self.min_interval = min_interval
        self.clock = clock
        self.loss: float | None = None
        self.eval_loss: float | None = None
        self._last_sent: float | None = None
        self._started_at = clock()
        self._start_step = 0
        self.last_progress = Progress()

    def on_train_begin(self, args, state, control, **kwargs):
        self._started_at = self.clock()
        self._start_step = state.global_step  # > 0 after resuming: ETA counts only this run's pace
        self._maybe_report(state, force=True)
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            self.loss = float(logs["loss"])
        if "eval_loss" in logs:
            self.eval_loss = float(logs["eval_loss"])
        self._maybe_report(state)
        return control

    def on_step_end(self, args, state, control, **kwargs):
        self._maybe_report(state)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self._maybe_report(state, force=True)
        return control

    def progress(self, state) -> Progress:
        total = max(int(state.max_steps or 0), 0)
        step = int(state.global_step)
        done_here = step - self._start_step
        eta = None
        if total and done_here > 0:
            eta = max(0, round((self.clock() - self._started_at) / done_here * (total - step)))
        return Progress(
            step=step,
            total_steps=total,
            epoch=round(float(state.epoch or 0.0), 4),
            percent=min(100, math.floor(100 * step / total)) if total else 0,
            loss=_finite(self.loss),
            eval_loss=_finite(self.eval_loss),
            eta_seconds=eta,
            updated=now_rfc3339(),
        )

    def _maybe_report(self, state, force: bool = False) -> None:
        if not state.is_world_process_zero:
            return
        now = self.clock()
        if not force and self._last_sent is not None and now - self._last_sent < self.min_interval:
            return
        self._last_sent = now
        self.last_progress = self.progress(state)
        progress = self.last_progress
        log.info(
            "step %d/%d (%d%%) epoch %.2f loss %s eval_loss %s eta %ss",
            progress.step,
            progress.total_steps,
            progress.percent,
            progress.epoch,
            _short(progress.loss),
            _short(progress.eval_loss),
            progress.eta_seconds if progress.eta_seconds is not None else "?",
        )
        self.sink.report(progress)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _short(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
