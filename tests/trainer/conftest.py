"""Fixtures of the trainer tests: one tiny model and one data claim per session, on a fake PVC root."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.support.tiny_model import build_tiny_model, write_facts_jsonl
from tests.trainer.helpers import DATA_CLAIM, MODEL_CLAIM, MODEL_PATH

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def pvc_root(tmp_path_factory) -> Path:
    """`<root>/<claim>/<path>` as the trainer sees volumes: the tiny model and the facts in four formats."""
    root = tmp_path_factory.mktemp("pvc")
    build_tiny_model(root / MODEL_CLAIM / MODEL_PATH)
    data = root / DATA_CLAIM
    write_facts_jsonl(data / "facts.jsonl", "alpaca")
    for fmt in ("qa", "chat", "text"):
        write_facts_jsonl(data / f"facts-{fmt}.jsonl", fmt)
    return root


@pytest.fixture(scope="session")
def tiny_model_dir(pvc_root: Path) -> Path:
    return pvc_root / MODEL_CLAIM / MODEL_PATH


@pytest.fixture(autouse=True)
def tensorboard_in_tmp(tmp_path: Path, monkeypatch) -> None:
    """Tests that build a Trainer without the flow's prepare_tracking would log TensorBoard files to ./runs of
    the checkout (transformers' default); the flow itself always sets the output volume's folder."""
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tensorboard"))
