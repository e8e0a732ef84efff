"""Experiment tracking of a FineTuneJob: where the loss curves go while it trains.

TensorBoard event files are written to the output volume by default (nothing to configure, nothing leaves the
cluster). MLflow and Weights & Biases are opt-in and configured by a Secret the job references by name: the
operator hands the Secret to the trainer pod as environment variables (envFrom), so its values never appear in the
spec, the status or the logs.
"""

from __future__ import annotations

from pydantic import Field

from .base import ApiModel, ObjectName, ShortText

TENSORBOARD_DIR = "tensorboard"
"""Folder of the TensorBoard event files, inside the job's output folder."""

MLFLOW_REQUIRED_KEY = "MLFLOW_TRACKING_URI"
WANDB_REQUIRED_KEY = "WANDB_API_KEY"


class MlflowTracking(ApiModel):
    """Log parameters and metrics to an MLflow tracking server."""

    secret_name: ObjectName
    """Secret in the job's namespace holding the MLflow settings as keys named like MLflow's environment variables:
    MLFLOW_TRACKING_URI (required), and MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD or
    MLFLOW_TRACKING_TOKEN when the server needs them. Every key of the Secret becomes an environment variable of
    the trainer; the values are never copied into the spec, status or logs."""

    experiment_name: ShortText | None = Field(default=None, min_length=1)
    """MLflow experiment to log into; empty uses MLFLOW_EXPERIMENT_NAME from the Secret, else MLflow's default."""


class WandbTracking(ApiModel):
    """Log metrics to Weights & Biases (wandb.ai or a self-hosted W&B server)."""

    secret_name: ObjectName
    """Secret in the job's namespace holding the W&B settings as keys named like W&B's environment variables:
    WANDB_API_KEY (required unless WANDB_MODE is offline), and WANDB_BASE_URL for a self-hosted server,
    WANDB_ENTITY for a team. Every key of the Secret becomes an environment variable of the trainer; the values
    are never copied into the spec, status or logs."""

    project: ShortText | None = Field(default=None, min_length=1)
    """W&B project to log into; empty uses WANDB_PROJECT from the Secret, else W&B's default."""


class TrackingSpec(ApiModel):
    """Where the trainer reports loss, learning rate and evaluation loss at every logging step."""

    tensorboard: bool = True
    """Write TensorBoard event files to the `tensorboard/` folder of the output volume. View them with a TensorBoard
    pod that mounts the volume (`kubectl port-forward`), or locally after copying the folder."""

    mlflow: MlflowTracking | None = None
    """Also log to MLflow, configured by a Secret."""

    wandb: WandbTracking | None = None
    """Also log to Weights & Biases, configured by a Secret."""

    def report_to(self) -> list[str]:
        """The integrations, by their transformers `report_to` names."""
        targets = ["tensorboard"] if self.tensorboard else []
        if self.mlflow is not None:
            targets.append("mlflow")
        if self.wandb is not None:
            targets.append("wandb")
        return targets

    def secret_names(self) -> list[str]:
        """Secrets the trainer pod takes its tracking environment from, in a fixed order (MLflow, then W&B)."""
        return [target.secret_name for target in (self.mlflow, self.wandb) if target is not None]
