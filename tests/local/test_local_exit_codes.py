"""`kubetune run --local` exits with the trainer's own code (64 invalid input, 65 model not loadable, ...), as the
operator tells them apart, instead of 1 for every failure; the message names the cause."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kubetune.api.runtime import TrainerExit
from kubetune.cli import main
from kubetune.local.cli import exit_code_of
from kubetune.local.train import TrainingFailed

ROWS = '{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": \n'


def _job(base_model: dict, dataset_path: str = "rows.jsonl") -> dict:
    return {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "exits"},
        "spec": {
            "baseModel": base_model,
            "dataset": {"pvc": {"claimName": "data", "path": dataset_path}, "evalFraction": 0.0},
            "training": {"maxSteps": 1},
            "resources": {"gpus": 0},
        },
    }


def _run_local(tmp_path: Path, job: dict, capsys) -> tuple[int, str]:
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    code = main(
        [
            "run", "--local", str(tmp_path / "job.yaml"), "--workdir", str(tmp_path / "work"),
            "--volume", f"data={tmp_path / 'data'}", "--volume", f"models={tmp_path / 'models'}", "--no-serve",
        ]
    )  # fmt: skip
    return code, capsys.readouterr().err


@pytest.fixture
def folders(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rows.jsonl").write_text(ROWS)
    (tmp_path / "models").mkdir()
    return tmp_path


def test_a_malformed_dataset_exits_64_naming_the_line(folders: Path, capsys):
    code, err = _run_local(folders, _job({"pvc": {"claimName": "models", "path": "tiny"}}), capsys)
    assert code == TrainerExit.INVALID_INPUT == 64
    assert "InvalidInput, exit code 64" in err and "rows.jsonl line 2" in err


def test_a_missing_base_model_exits_65(folders: Path, capsys):
    (folders / "data" / "rows.jsonl").write_text(ROWS.splitlines()[0] + "\n")
    code, err = _run_local(folders, _job({"pvc": {"claimName": "models", "path": "absent"}}), capsys)
    assert code == TrainerExit.MODEL_LOAD == 65
    assert "ModelLoadFailed" in err and "no model at" in err


def test_an_invalid_document_exits_64(folders: Path, capsys):
    job = _job({"pvc": {"claimName": "models", "path": "tiny"}})
    job["spec"]["training"]["maxSteps"] = 0
    code, err = _run_local(folders, job, capsys)
    assert code == 64
    assert "maxSteps" in err


@pytest.mark.parametrize(("returncode", "expected"), [(64, 64), (66, 66), (1, 1), (-9, 137), (-15, 143)])
def test_exit_code_of_a_failed_trainer(returncode: int, expected: int):
    assert exit_code_of(TrainingFailed("job", returncode, "message")) == expected
