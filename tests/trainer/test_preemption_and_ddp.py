"""Real processes: a trainer SIGKILLed after its first checkpoint resumes from it and finishes the same run; one
sent SIGTERM checkpoints the step it reached, exits 69 (Preempted) and resumes there; a 2-process torchrun (gloo,
CPU) shards the data and writes one adapter."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kubetune.api.runtime import (
    ADAPTER_DIR,
    CHECKPOINTS_DIR,
    ENV_TERMINATION_LOG,
    METRICS_FILE,
    PROGRESS_FILE,
    TrainerExit,
)
from kubetune_trainer.checkpoints import COMPLETE_MARKER, newest_complete_checkpoint

from tests.trainer.helpers import (
    base_spec,
    count_correct,
    load_adapted,
    start_subprocess,
    trainer_env,
    write_spec,
)

pytestmark = pytest.mark.slow


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(
                f"trainer exited ({process.returncode}) before {path} appeared:\n{process.stdout.read()}"
            )
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{path} did not appear in {timeout} s")
        time.sleep(0.02)


def test_sigkill_after_a_checkpoint_then_resume(pvc_root: Path, tiny_model_dir: Path, tmp_path: Path):
    spec = base_spec(training={"saveSteps": 10, "saveTotalLimit": 10})
    spec_path, output = write_spec(tmp_path, spec), tmp_path / "output"
    first = start_subprocess(spec_path, output, pvc_root)
    wait_for(output / CHECKPOINTS_DIR / "checkpoint-10" / COMPLETE_MARKER, first)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL

    assert not (output / ADAPTER_DIR).exists(), "a killed run leaves no complete-looking adapter"
    resumed_from = newest_complete_checkpoint(output / CHECKPOINTS_DIR)
    killed_at = int(resumed_from.name.split("-")[1])
    assert 10 <= killed_at < 60, "killed while training was still running"
    half_written = output / CHECKPOINTS_DIR / "checkpoint-70"  # as if killed in the middle of a save
    half_written.mkdir()
    (half_written / "adapter_model.safetensors").write_bytes(b"\0" * 10)

    second = start_subprocess(spec_path, output, pvc_root)
    log, _ = second.communicate(timeout=300)
    assert second.returncode == 0, log
    assert f"resuming from {resumed_from}" in log
    assert f"step {killed_at}/60" in log, "the first report of the new run starts at the checkpoint's step"
    assert not half_written.exists(), "the half-written checkpoint was discarded, not resumed"
    metrics = json.loads((output / ADAPTER_DIR / METRICS_FILE).read_text())
    assert metrics["steps"] == 60
    assert metrics["trainLoss"] > metrics["evalLoss"], "train loss spans the whole run, not only the resumed part"
    final_state = json.loads((output / CHECKPOINTS_DIR / "checkpoint-60" / "trainer_state.json").read_text())
    assert final_state["global_step"] == final_state["max_steps"] == 60
    model, tokenizer = load_adapted(tiny_model_dir, output / ADAPTER_DIR)
    assert count_correct(model, tokenizer) >= 15


def test_two_process_torchrun_on_cpu(pvc_root: Path, tmp_path: Path):
    # One epoch over 115 training rows with 4 rows per process and step: 29 steps alone, 15 when the two
    # processes each take half of every step's data.
    spec = base_spec(training={"maxSteps": None, "epochs": 1, "batchSize": 4, "saveSteps": 1000})
    spec["training"].pop("maxSteps")
    spec_path, output = write_spec(tmp_path, spec), tmp_path / "output"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "kubetune_trainer",
        "--spec",
        str(spec_path),
        "--output",
        str(output),
    ]
    result = subprocess.run(command, env=trainer_env(pvc_root), capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    metrics = json.loads((output / ADAPTER_DIR / METRICS_FILE).read_text())
    assert metrics["steps"] == 15
    assert json.loads((output / PROGRESS_FILE).read_text())["progress"]["totalSteps"] == 15
    assert (output / ADAPTER_DIR / "adapter_model.safetensors").is_file()


def test_sigterm_checkpoints_the_current_step_and_exits_69_then_resumes(
    pvc_root: Path, tiny_model_dir: Path, tmp_path: Path
):
    """No periodic checkpoint (saveSteps 1000): all that survives SIGTERM is the checkpoint written on it, at the
    step the trainer had reached; nothing before it is lost, and the next run resumes there."""
    spec = base_spec(training={"maxSteps": 200, "saveSteps": 1000, "loggingSteps": 1})
    spec_path, output = write_spec(tmp_path, spec), tmp_path / "output"
    termination = tmp_path / "termination-log"
    first = start_subprocess(
        spec_path, output, pvc_root, PYTHONUNBUFFERED="1", **{ENV_TERMINATION_LOG: str(termination)}
    )
    logged, lines = 0, []
    for line in first.stdout:  # the Trainer prints one {'loss': ...} line per finished optimizer step
        lines.append(line)
        logged += line.startswith("{'loss'")
        if logged == 20:
            first.send_signal(signal.SIGTERM)
            break
    rest, _ = first.communicate(timeout=120)
    log = "".join(lines) + rest
    assert first.returncode == TrainerExit.PREEMPTED, log[-3000:]
    summary = json.loads(termination.read_text())
    assert summary["exitReason"] == "Preempted"
    saved = newest_complete_checkpoint(output / CHECKPOINTS_DIR)
    assert saved is not None, "SIGTERM wrote a checkpoint"
    step = int(saved.name.split("-")[1])
    assert 20 <= step < 200, f"every step finished before SIGTERM is in the checkpoint (saved at {step})"
    assert f"stopped by SIGTERM at step {step}" in summary["message"]
    assert not (output / ADAPTER_DIR).exists(), "a preempted run publishes nothing"

    second = start_subprocess(spec_path, output, pvc_root)
    log, _ = second.communicate(timeout=300)
    assert second.returncode == 0, log[-3000:]
    assert f"resuming from {saved}" in log
    assert json.loads((output / ADAPTER_DIR / METRICS_FILE).read_text())["steps"] == 200
