"""training.loadBestModelAtEnd publishes the checkpoint with the lowest evaluation loss, not the last one, and the
metrics describe those weights."""

from __future__ import annotations

import json
from pathlib import Path

from kubetune.api.runtime import ADAPTER_DIR, CHECKPOINTS_DIR, METRICS_FILE
from safetensors.torch import load_file

from tests.trainer.helpers import base_spec, newest_log_history, run_in_process, write_spec

ADAPTER_WEIGHTS = "adapter_model.safetensors"


def _eval_losses(output: Path) -> dict[int, float]:
    return {entry["step"]: entry["eval_loss"] for entry in newest_log_history(output) if "eval_loss" in entry}


def test_the_best_checkpoint_is_published(pvc_root: Path, tmp_path: Path):
    # 14 facts trained, 2 held out whose answers cannot be inferred: the held-out loss falls while the answer
    # format is learned, then rises as the training facts are memorised.
    training = {
        "maxSteps": 40,
        "learningRate": 3e-2,
        "evalSteps": 5,
        "saveSteps": 5,
        "saveTotalLimit": 2,
        "loadBestModelAtEnd": True,
    }
    spec = base_spec(training=training)
    output = tmp_path / "output"
    assert run_in_process(write_spec(tmp_path, spec), output, pvc_root) == 0
    losses = _eval_losses(output)
    best_step = min(losses, key=losses.get)
    assert best_step < 40, f"the scenario needs a best step before the last: {losses}"
    metrics = json.loads((output / ADAPTER_DIR / METRICS_FILE).read_text())
    assert metrics["publishedStep"] == best_step and metrics["steps"] == 40
    assert metrics["evalLoss"] == losses[best_step], "the metrics describe the published weights"
    published = load_file(output / ADAPTER_DIR / ADAPTER_WEIGHTS)
    kept = load_file(output / CHECKPOINTS_DIR / f"checkpoint-{best_step}" / ADAPTER_WEIGHTS)
    assert published.keys() == kept.keys()
    assert all((published[name] == kept[name]).all() for name in published), "the best checkpoint's weights"
