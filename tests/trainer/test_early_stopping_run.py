"""training.earlyStopping on the tiny model: the run stops before maxSteps once the held-out loss has not improved
for `patience` evaluations, publishes the best checkpoint's weights, and says why and at which step, in
metrics.json, the termination message and the model card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from kubetune.api.runtime import ADAPTER_DIR, CHECKPOINTS_DIR, METRICS_FILE
from kubetune_trainer.early_stopping import best_evaluation, eval_history, evaluations_without_improvement
from safetensors.torch import load_file

from tests.trainer.helpers import base_spec, newest_log_history, run_in_process, write_spec

ADAPTER_WEIGHTS = "adapter_model.safetensors"
PATIENCE = 2


@pytest.mark.slow
def test_training_stops_early_and_publishes_the_best_checkpoint(pvc_root: Path, tmp_path: Path):
    # 14 facts trained, 2 held out whose answers cannot be inferred: the held-out loss falls while the answer
    # format is learned, then rises for good as the training facts are memorised (a high learning rate makes the
    # turn early and steep, so patience 2 surely runs out long before step 100).
    training = {
        "maxSteps": 100,
        "learningRate": 3e-2,
        "evalSteps": 5,
        "saveSteps": 5,
        "saveTotalLimit": 2,
        "earlyStopping": {"patience": PATIENCE},
    }
    output = tmp_path / "output"
    assert run_in_process(write_spec(tmp_path, base_spec(training=training)), output, pvc_root) == 0

    metrics = json.loads((output / ADAPTER_DIR / METRICS_FILE).read_text())
    history = eval_history(newest_log_history(output))
    best_step, best_loss = best_evaluation(history)
    stopped = metrics["steps"]
    assert stopped < 100, f"early stopping never triggered: {history}"
    assert stopped == best_step + PATIENCE * 5, f"stops {PATIENCE} evaluations after the best one: {history}"
    assert evaluations_without_improvement(history, 0.0) == PATIENCE
    assert metrics["stopReason"] == "EarlyStopped"
    assert metrics["bestStep"] == metrics["publishedStep"] == best_step
    assert metrics["evalLoss"] == best_loss, "the metrics describe the published weights"
    assert metrics["stopMessage"] == (
        f"eval loss did not improve for {PATIENCE} evaluations after step {best_step} (best eval loss "
        f"{best_loss:.4f} at step {best_step}); stopped at step {stopped} of 100 planned"
    )

    published = load_file(output / ADAPTER_DIR / ADAPTER_WEIGHTS)
    kept = load_file(output / CHECKPOINTS_DIR / f"checkpoint-{best_step}" / ADAPTER_WEIGHTS)
    assert published.keys() == kept.keys()
    assert all((published[name] == kept[name]).all() for name in published), "the best checkpoint's weights"
    last = load_file(output / CHECKPOINTS_DIR / f"checkpoint-{stopped}" / ADAPTER_WEIGHTS)
    assert any((published[name] != last[name]).any() for name in published), "not the last step's weights"

    summary = json.loads((tmp_path / "termination-log").read_text())
    assert summary["metrics"]["stopReason"] == "EarlyStopped" and summary["metrics"]["bestStep"] == best_step
    card = (output / ADAPTER_DIR / "README.md").read_text()
    assert f"| Stopped | EarlyStopped: {metrics['stopMessage']} |" in card
    assert f"| Published step | {best_step} |" in card

    # A pod killed after the decision but before the adapter was published: the retry resumes from the newest
    # checkpoint, recounts the evaluations without improvement from its history, and stops again at once.
    shutil.rmtree(output / ADAPTER_DIR)
    assert run_in_process(write_spec(tmp_path, base_spec(training=training)), output, pvc_root) == 0
    again = json.loads((output / ADAPTER_DIR / METRICS_FILE).read_text())
    assert again["stopReason"] == "EarlyStopped" and again["publishedStep"] == best_step
    assert stopped <= again["steps"] <= stopped + 1, "no further evaluation: the patience was not reset"
    republished = load_file(output / ADAPTER_DIR / ADAPTER_WEIGHTS)
    assert all((republished[name] == kept[name]).all() for name in published), "the best checkpoint again"
