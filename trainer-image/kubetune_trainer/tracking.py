"""Experiment tracking: check that each integration the spec asks for can run, and point it at the output volume.

transformers' own callbacks do the logging (`report_to`); they read their settings from the environment, which
the operator fills from the referenced Secrets (envFrom). This module only adds what the spec decides (where the
TensorBoard and offline W&B files go, the experiment / project name, the run name) and refuses early, with the
field to fix, what would otherwise fail after the model is loaded or log to a place nobody looks. It never logs a
variable's value.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import MutableMapping
from pathlib import Path

from kubetune.api.runtime import ENV_JOB_NAME, ENV_NAMESPACE
from kubetune.api.tracking import MLFLOW_REQUIRED_KEY, TENSORBOARD_DIR, WANDB_REQUIRED_KEY, TrackingSpec

from .errors import InvalidInputError

log = logging.getLogger(__name__)

WANDB_KEYLESS_MODES = ("offline", "disabled", "dryrun")
PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "mlflow": ("mlflow",), "wandb": ("wandb",)}


def tensorboard_dir(output_dir: Path) -> Path:
    return output_dir / TENSORBOARD_DIR


def run_name(environ: MutableMapping[str, str] | None = None) -> str | None:
    """'namespace/name' of the FineTuneJob in a pod (the operator sets both), else None (the library's default)."""
    environ = os.environ if environ is None else environ
    name = environ.get(ENV_JOB_NAME)
    if not name:
        return None
    namespace = environ.get(ENV_NAMESPACE)
    return f"{namespace}/{name}" if namespace else name


def prepare_tracking(spec: TrackingSpec, output_dir: Path, environ: MutableMapping[str, str] | None = None) -> None:
    """Check installed packages and required settings, then set the output-volume paths the callbacks read."""
    environ = os.environ if environ is None else environ
    for target in spec.report_to():
        if not any(importlib.util.find_spec(module) for module in PACKAGES[target]):
            fix = "set tracking.tensorboard: false" if target == "tensorboard" else f"remove tracking.{target}"
            raise InvalidInputError(
                f"tracking.{target}: the trainer image has no {PACKAGES[target][0]} package; "
                f"install it in the image (pip install 'kubetune[trainer,tracking]') or {fix}"
            )
    if spec.mlflow is not None and not environ.get(MLFLOW_REQUIRED_KEY):
        raise InvalidInputError(
            f"tracking.mlflow.secretName: the Secret {spec.mlflow.secret_name!r} has no key {MLFLOW_REQUIRED_KEY} "
            "(the address of the MLflow tracking server)"
        )
    if (
        spec.wandb is not None
        and not environ.get(WANDB_REQUIRED_KEY)
        and environ.get("WANDB_MODE", "").lower() not in WANDB_KEYLESS_MODES
    ):
        raise InvalidInputError(
            f"tracking.wandb.secretName: the Secret {spec.wandb.secret_name!r} has no key {WANDB_REQUIRED_KEY} "
            "(set WANDB_MODE=offline in it to log to the output volume only)"
        )
    # The spec's names win over the Secret's keys, in a pod and in `kubetune run --local` alike.
    if spec.mlflow is not None and spec.mlflow.experiment_name:
        environ["MLFLOW_EXPERIMENT_NAME"] = spec.mlflow.experiment_name
    if spec.wandb is not None and spec.wandb.project:
        environ["WANDB_PROJECT"] = spec.wandb.project
    if spec.tensorboard:
        environ["TENSORBOARD_LOGGING_DIR"] = str(tensorboard_dir(output_dir))
        log.info("TensorBoard event files go to %s", tensorboard_dir(output_dir))
    if spec.wandb is not None:
        # W&B keeps its run files (and, offline, the whole run for a later `wandb sync`) in WANDB_DIR/wandb: on the
        # output volume, since the image's working directory is not kept.
        environ["WANDB_DIR"] = str(output_dir)
    for target in ("mlflow", "wandb"):
        if getattr(spec, target) is not None:
            log.info("reporting to %s (settings from Secret %r)", target, getattr(spec, target).secret_name)
