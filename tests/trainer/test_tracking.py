"""Experiment tracking: TensorBoard files on the output volume by default, MLflow and W&B from Secret settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubetune.api import FineTuneJobSpec
from kubetune.api.tracking import TrackingSpec
from kubetune_trainer.errors import InvalidInputError
from kubetune_trainer.tracking import prepare_tracking, run_name

from tests.trainer.helpers import base_spec, run_in_process, write_spec

SENTINEL = "s3cr3t-value-that-must-never-be-logged"


def test_tensorboard_is_the_default_and_secrets_add_mlflow_and_wandb():
    assert TrackingSpec().report_to() == ["tensorboard"]
    both = TrackingSpec.model_validate(
        {"tensorboard": False, "mlflow": {"secretName": "mlflow"}, "wandb": {"secretName": "wandb", "project": "p"}}
    )
    assert both.report_to() == ["mlflow", "wandb"]
    assert both.secret_names() == ["mlflow", "wandb"]
    assert TrackingSpec(tensorboard=False).report_to() == []


def test_sft_config_reports_to_what_the_spec_names(monkeypatch):
    from kubetune_trainer.configs import build_configs
    from kubetune_trainer.device import DeviceInfo

    monkeypatch.setenv("KUBETUNE_JOB_NAME", "chat")
    monkeypatch.setenv("KUBETUNE_NAMESPACE", "team-a")
    wire = {"baseModel": {"name": "org/m"}, "dataset": {"url": "https://example.com/d.jsonl"}}
    cpu = DeviceInfo(kind="cpu")

    def sft(tracking):
        spec = FineTuneJobSpec.model_validate({**wire, "tracking": tracking})
        return build_configs(spec, checkpoints_dir=Path("/out/checkpoints"), device=cpu, has_eval=False).sft

    assert sft({}).report_to == ["tensorboard"]
    assert sft({"tensorboard": False}).report_to in ([], "none", ["none"])
    assert sft({"mlflow": {"secretName": "m"}, "wandb": {"secretName": "w"}}).report_to == [
        "tensorboard",
        "mlflow",
        "wandb",
    ]
    assert sft({}).run_name == "team-a/chat"


def test_run_name_outside_a_pod_is_the_library_default():
    assert run_name({}) is None
    assert run_name({"KUBETUNE_JOB_NAME": "j"}) == "j"


@pytest.mark.parametrize(
    ("tracking", "environ", "message"),
    [
        ({"mlflow": {"secretName": "ml"}}, {}, r"mlflow.secretName: the Secret 'ml' has no key MLFLOW_TRACKING_URI"),
        ({"wandb": {"secretName": "wb"}}, {}, r"tracking.wandb.secretName: the Secret 'wb' has no key WANDB_API_KEY"),
        ({"wandb": {"secretName": "wb"}}, {"WANDB_MODE": "online"}, "has no key WANDB_API_KEY"),
    ],
)
def test_missing_settings_are_refused_with_the_field_to_fix(tracking, environ, message, tmp_path: Path):
    with pytest.raises(InvalidInputError, match=message):
        prepare_tracking(TrackingSpec.model_validate(tracking), tmp_path, dict(environ))


def test_offline_wandb_needs_no_key_and_keeps_its_files_on_the_output_volume(tmp_path: Path):
    environ = {"WANDB_MODE": "offline"}
    prepare_tracking(TrackingSpec.model_validate({"wandb": {"secretName": "wb"}}), tmp_path, environ)
    assert environ["WANDB_DIR"] == str(tmp_path)
    assert environ["TENSORBOARD_LOGGING_DIR"] == str(tmp_path / "tensorboard")


def test_the_specs_experiment_and_project_win_over_the_secrets_keys(tmp_path: Path):
    environ = {"MLFLOW_TRACKING_URI": "http://m", "MLFLOW_EXPERIMENT_NAME": "from-secret", "WANDB_MODE": "offline"}
    tracking = {
        "mlflow": {"secretName": "m", "experimentName": "sentiment"},
        "wandb": {"secretName": "w", "project": "p"},
    }
    prepare_tracking(TrackingSpec.model_validate(tracking), tmp_path, environ)
    assert (environ["MLFLOW_EXPERIMENT_NAME"], environ["WANDB_PROJECT"]) == ("sentiment", "p")
    kept = {"MLFLOW_TRACKING_URI": "http://m", "MLFLOW_EXPERIMENT_NAME": "from-secret"}
    prepare_tracking(TrackingSpec.model_validate({"mlflow": {"secretName": "m"}}), tmp_path, kept)
    assert kept["MLFLOW_EXPERIMENT_NAME"] == "from-secret"


def test_a_missing_package_is_refused_before_training(monkeypatch, tmp_path: Path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    environ = {"MLFLOW_TRACKING_URI": "http://mlflow:5000"}
    with pytest.raises(InvalidInputError, match=r"tracking.mlflow: the trainer image has no mlflow package"):
        prepare_tracking(TrackingSpec.model_validate({"mlflow": {"secretName": "ml"}}), tmp_path, environ)


@pytest.mark.slow
def test_one_run_logs_the_same_loss_curve_to_tensorboard_mlflow_and_offline_wandb(
    pvc_root: Path, tmp_path: Path, monkeypatch, capfd, caplog
):
    """A real run on the tiny model: the loss the Trainer logged reaches all three trackers, and a secret value
    given to the trainer as an MLflow setting appears nowhere in the logs or the output folder."""
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    mlruns = tmp_path / "mlruns"
    settings = {  # what the referenced Secrets hold; the operator passes them as the pod's environment
        "MLFLOW_TRACKING_URI": mlruns.as_uri(),
        "MLFLOW_ALLOW_FILE_STORE": "true",
        "MLFLOW_TRACKING_PASSWORD": SENTINEL,
        "WANDB_MODE": "offline",
        "WANDB_API_KEY": SENTINEL,
        "WANDB_SILENT": "true",
        "MLFLOW_EXPERIMENT_NAME": "kubetune-test",
        "KUBETUNE_JOB_NAME": "tracked",
        "KUBETUNE_NAMESPACE": "team-a",
    }
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    monkeypatch.delenv("WANDB_DIR", raising=False)
    tracking = {"mlflow": {"secretName": "mlflow-settings"}, "wandb": {"secretName": "wandb-settings"}}
    spec = base_spec(training={"maxSteps": 4, "loggingSteps": 1, "evalSteps": 2}, tracking=tracking)
    output = tmp_path / "out"
    assert run_in_process(write_spec(tmp_path, spec), output, pvc_root, **settings) == 0

    events = EventAccumulator(str(output / "tensorboard"))
    events.Reload()
    tb_loss = {event.step: event.value for event in events.Scalars("train/loss")}
    assert sorted(tb_loss) == [1, 2, 3, 4]
    assert {event.step for event in events.Scalars("eval/loss")} == {2, 4}

    client = MlflowClient(mlruns.as_uri())
    [run] = client.search_runs([client.get_experiment_by_name("kubetune-test").experiment_id])
    assert run.info.run_name == "team-a/tracked"
    mlflow_loss = {metric.step: metric.value for metric in client.get_metric_history(run.info.run_id, "loss")}
    assert mlflow_loss == pytest.approx(tb_loss, rel=1e-6)

    [wandb_run] = (output / "wandb").glob("offline-run-*")
    assert list(wandb_run.glob("run-*.wandb")), "the offline run is on the output volume, ready for `wandb sync`"

    logs = capfd.readouterr()
    assert SENTINEL not in logs.out + logs.err + caplog.text
    for path in output.rglob("*"):
        if path.is_file() and path.suffix in ("", ".json", ".md", ".txt", ".yaml", ".log", ".wandb"):
            assert SENTINEL.encode() not in path.read_bytes(), f"the secret value leaked into {path}"
    assert json.loads((output / "adapter" / "metrics.json").read_text())["steps"] == 4
