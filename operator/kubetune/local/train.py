"""Run one FineTuneJob's trainer on this machine, exactly as its pod would (same entrypoint, same spec JSON)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubetune.api import FineTuneJob, PvcPath
from kubetune.api.runtime import (
    CHECKPOINTS_DIR,
    ENV_JOB_NAME,
    ENV_TERMINATION_LOG,
    EXIT_REASONS,
    HUMAN_EVAL_FILE,
    LOSS_CURVES_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    MODEL_CARD_FILE,
    PROGRESS_FILE,
    TrainerExit,
    adapter_path,
    resolve_pvc_path,
    spec_file_text,
)
from kubetune.operator.manifests.trainer import output_location

from .progress import ProgressLine, read_progress
from .volumes import LocalVolumes

POLL_SECONDS = 1.0


class TrainingFailed(RuntimeError):
    """The trainer exited non-zero; carries its exit reason."""

    def __init__(self, job: str, code: int, message: str) -> None:
        reason = EXIT_REASONS.get(TrainerExit(code), "TrainerError") if code in set(TrainerExit) else "TrainerError"
        super().__init__(f"FineTuneJob {job} failed ({reason}, exit code {code}): {message}")
        self.code = code


@dataclass
class TrainResult:
    """Where a finished adapter is and how this run got it."""

    job: str
    adapter: PvcPath
    adapter_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    how: str = "trained"
    """trained, resumed (from a checkpoint) or reused (a finished adapter with the same spec)."""
    output_dir: Path | None = None
    """The trainer's output folder (`adapter/` and the human-eval sheet are in it)."""

    def result_files(self) -> list[tuple[str, Path]]:
        """(what, where) of the files a person reads after training, those the run wrote."""
        candidates = [
            ("model card", self.adapter_dir / MODEL_CARD_FILE),
            ("loss curves", self.adapter_dir / LOSS_CURVES_FILE),
        ]
        if self.output_dir is not None:
            candidates.append(("human-eval sheet", self.output_dir / HUMAN_EVAL_FILE))
        return [(what, path) for what, path in candidates if path.is_file()]


def _finished_with_same_spec(adapter_dir: Path, job: FineTuneJob) -> bool:
    try:
        manifest = json.loads((adapter_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return manifest.get("specHash") == job.spec.fingerprint()


def _newest_checkpoint(output_dir: Path) -> str | None:
    folder = output_dir / CHECKPOINTS_DIR
    steps = (
        sorted(
            (int(p.name.rsplit("-", 1)[1]) for p in folder.glob("checkpoint-*") if p.name.rsplit("-", 1)[1].isdigit()),
        )
        if folder.is_dir()
        else []
    )
    return f"checkpoint-{steps[-1]}" if steps else None


def _metrics(adapter_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((adapter_dir / METRICS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def trainer_command(spec_file: Path, output_dir: Path) -> list[str]:
    return [sys.executable, "-m", "kubetune_trainer", "--spec", str(spec_file), "--output", str(output_dir)]


def train_locally(
    job: FineTuneJob, volumes: LocalVolumes, workdir: Path, env: dict[str, str], say=print
) -> TrainResult:
    """Train (or resume, or reuse) the job's adapter; raises TrainingFailed or KeyboardInterrupt."""
    name = job.metadata.name
    output = output_location(job.metadata.name, job.spec)
    volumes.claim(output.claim_name)
    output_dir = Path(resolve_pvc_path(output, str(volumes.pvc_root)))
    adapter = adapter_path(output)
    adapter_dir = Path(resolve_pvc_path(adapter, str(volumes.pvc_root)))
    if _finished_with_same_spec(adapter_dir, job):
        say(f"FineTuneJob {name}: reusing the finished adapter in {adapter_dir} (same spec; delete it to retrain)")
        return TrainResult(name, adapter, adapter_dir, _metrics(adapter_dir), how="reused", output_dir=output_dir)
    checkpoint = _newest_checkpoint(output_dir)
    how = "resumed" if checkpoint else "trained"
    say(f"FineTuneJob {name}: " + (f"resuming from {checkpoint}" if checkpoint else "training") + f" -> {output_dir}")

    run_dir = workdir / "runs" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    spec_file = run_dir / "spec.json"
    spec_file.write_text(spec_file_text(job.spec), encoding="utf-8")
    termination_log = run_dir / "termination-log"
    termination_log.unlink(missing_ok=True)
    child_env = {**os.environ, **env, **volumes.env(), ENV_JOB_NAME: name, ENV_TERMINATION_LOG: str(termination_log)}
    log_file = run_dir / "trainer.log"
    say(f"  trainer log: {log_file}")
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            trainer_command(spec_file, output_dir), env=child_env, stdout=log, stderr=subprocess.STDOUT
        )
        line = ProgressLine()
        try:
            while process.poll() is None:
                line.show(read_progress(output_dir / PROGRESS_FILE))
                time.sleep(POLL_SECONDS)
            line.show(read_progress(output_dir / PROGRESS_FILE))
        except KeyboardInterrupt:
            line.close()
            say(f"\nstopping the trainer of {name}; run again to resume from its newest checkpoint")
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            raise
        finally:
            line.close()
    if process.returncode != 0:
        raise TrainingFailed(name, process.returncode, _failure_message(termination_log, log_file))
    return TrainResult(name, adapter, adapter_dir, _metrics(adapter_dir), how=how, output_dir=output_dir)


def _failure_message(termination_log: Path, log_file: Path) -> str:
    try:
        return json.loads(termination_log.read_text(encoding="utf-8")).get("message", "")
    except (OSError, ValueError):
        tail = log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-5:]
        return " | ".join(tail) + f" (see {log_file})"
