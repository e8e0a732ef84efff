"""The contract between the operator and the images: mount points, file names, env names, exit codes.

The operator renders pods with these values and the trainer, the server and the local runner read them,
so a path or variable is named here once. Volumes are mounted whole at `<root>/<claimName>` and a
`PvcPath` resolves to `<root>/<claimName>/<path>`, which lets several references share one mount.
"""

from __future__ import annotations

import json
import os
from enum import IntEnum
from pathlib import PurePosixPath

from .finetunejob import FineTuneJobSpec
from .sources import PvcPath

# Mount points inside pods (and, under a local folder, for the local runner).
PVC_ROOT = "/mnt/kubetune/pvc"
CONFIGMAP_ROOT = "/mnt/kubetune/configmap"
SPEC_DIR = "/etc/kubetune"
SPEC_FILE = "spec.json"
SERVE_CONFIG_FILE = "serve.json"
DEFAULT_OUTPUT = "/workspace/output"
SHM_DIR = "/dev/shm"
TERMINATION_LOG = "/dev/termination-log"
SERVER_PORT = 8000

# Layout of a trainer output folder.
RUNS_DIR = "runs"
"""On an output claim, each FineTuneJob writes under `runs/<its uid>`: runs never share checkpoints."""
ADAPTER_DIR = "adapter"
ADAPTER_STORE_DIR = "adapters"
"""On the adapter store claim, FineTuneJob `name` with uid `uid` publishes to `adapters/<name>/<uid>`."""
CHECKPOINTS_DIR = "checkpoints"
PROGRESS_FILE = "progress.json"
METRICS_FILE = "metrics.json"
MANIFEST_FILE = "kubetune.json"
LOCK_FILE = ".kubetune.lock"
MODEL_CARD_FILE = "README.md"
LOSS_CURVES_FILE = "loss-curves.png"
"""Train and eval loss against step, beside the model card (which embeds it) in the adapter folder."""
HUMAN_EVAL_FILE = "human-eval.csv"
"""evaluation.humanEvalSamples' export, in the output folder beside `adapter/` (held-out rows stay off the Hub)."""

# Environment variables.
ENV_SPEC = "KUBETUNE_SPEC"
ENV_OUTPUT = "KUBETUNE_OUTPUT"
ENV_PVC_ROOT = "KUBETUNE_PVC_ROOT"
ENV_CONFIGMAP_ROOT = "KUBETUNE_CONFIGMAP_ROOT"
ENV_JOB_NAME = "KUBETUNE_JOB_NAME"
ENV_NAMESPACE = "KUBETUNE_NAMESPACE"
ENV_TERMINATION_LOG = "KUBETUNE_TERMINATION_LOG"
ENV_REPORT_CONFIGMAP = "KUBETUNE_REPORT_CONFIGMAP"
"""The trainer's own ConfigMap: it writes progress and final metrics there; the operator validates them and copies
them into the FineTuneJob's status (the trainer's token cannot write that status)."""
ENV_NODES = "KUBETUNE_NODES"
"""Nodes (pods) of one training run; more than 1 runs an Indexed Job whose completion index is the node rank."""
ENV_PROCS_PER_NODE = "KUBETUNE_PROCS_PER_NODE"
"""Trainer processes per pod: one per GPU (torchrun), 1 on CPU."""
ENV_MASTER_ADDR = "KUBETUNE_MASTER_ADDR"
"""Host name of node 0 (its pod behind the headless rendezvous Service) for torchrun's rendezvous."""
ENV_MASTER_PORT = "KUBETUNE_MASTER_PORT"
ENV_NODE_RANK = "JOB_COMPLETION_INDEX"
"""Set by the Job controller in every pod of an Indexed Job (0 .. completions-1)."""
RENDEZVOUS_PORT = 29500
REPORT_PROGRESS_KEY = "progress"
REPORT_METRICS_KEY = "metrics"
REPORT_RESULTS_KEY = "results"
"""In the report ConfigMap: a JSON index of the result files the trainer copied there when it finished (for
`kubetune results`); each file is under `results.<file name>`, text in `data`, images in `binaryData`. The operator
reads only progress and metrics."""
REPORT_RESULTS_PREFIX = "results."
RESULTS_BUDGET_BYTES = 768 * 1024
"""Most bytes of result files in the report ConfigMap (a ConfigMap holds at most 1 MiB): the card, metrics and
picture first, then as many human-evaluation rows as fit."""
ENV_HF_TOKEN = "HF_TOKEN"
"""The base model's (and a Hub dataset's) read token: huggingface_hub reads it itself."""
AUGMENTATION_TOKEN_ENV = {
    "paraphrase.model": "KUBETUNE_PARAPHRASE_HF_TOKEN",
    "backTranslation.model": "KUBETUNE_BACK_TRANSLATION_HF_TOKEN",
    "backTranslation.reverseModel": "KUBETUNE_BACK_TRANSLATION_REVERSE_HF_TOKEN",
}
"""The read token of each augmentation model that names its own tokenSecretRef (one defaulting to the base model
uses HF_TOKEN), so each token reaches only the download it is for."""
ENV_HF_PUSH_TOKEN = "HF_PUSH_TOKEN"
"""The write token of output.hub (its tokenSecretRef): only the adapter push uses it."""
ENV_MODEL_CACHE = "KUBETUNE_MODEL_CACHE"
"""Set (to HF_HOME on the mounted cache claim) only where a shared model cache is mounted: see kubetune.model_cache."""
ENV_ADAPTER_STORE = "KUBETUNE_ADAPTER_STORE"
"""Where the trainer also publishes the finished adapter (a folder on the namespace's adapter store claim), so
servers never depend on the trainer's own volume."""
ENV_SERVE_CONFIG = "KUBETUNE_SERVE_CONFIG"
ENV_API_KEY = "KUBETUNE_API_KEY"
ENV_HOST = "KUBETUNE_HOST"
ENV_PORT = "KUBETUNE_PORT"
ENV_DRAIN_SECONDS = "KUBETUNE_DRAIN_SECONDS"
"""Seconds the server lets running requests finish after SIGTERM; the pod's grace period is set to outlast it."""


TRAINER_LAUNCH_MODULE = "kubetune_trainer.launch"
"""The trainer container's entry: the trainer itself, or torchrun with one trainer process per GPU and node."""


class TrainerExit(IntEnum):
    """Trainer exit codes; the operator's podFailurePolicy and failure reasons key on them."""

    OK = 0
    ERROR = 1
    """Anything unexpected: retried up to backoffLimit."""
    INVALID_INPUT = 64
    """Bad spec or dataset: retrying cannot help, the Job fails at once."""
    MODEL_LOAD = 65
    """The base model could not be loaded (missing path, no access, network): retried."""
    OUT_OF_MEMORY = 66
    """Accelerator or host out of memory: retrying the same recipe cannot help, the Job fails at once."""
    OUTPUT_LOCKED = 67
    """Another trainer holds the output folder's lock."""
    NETWORK = 68
    """The Hub or a dataset server kept failing (HTTP 429/5xx, timeouts, refused connections) after the trainer's
    own bounded retries: retried by the Job, counted against backoffLimit."""
    PREEMPTED = 69
    """Stopped by SIGTERM (preemption, eviction, node drain) after checkpointing the last optimizer step: the Job
    starts a new pod that resumes there, without counting it against backoffLimit."""


EXIT_REASONS = {
    TrainerExit.INVALID_INPUT: "InvalidInput",
    TrainerExit.MODEL_LOAD: "ModelLoadFailed",
    TrainerExit.OUT_OF_MEMORY: "OutOfMemory",
    TrainerExit.OUTPUT_LOCKED: "OutputLocked",
    TrainerExit.NETWORK: "NetworkError",
    TrainerExit.PREEMPTED: "Preempted",
    TrainerExit.ERROR: "TrainerError",
}


def pvc_root() -> str:
    """Where claims are mounted: the pod default, or a local folder for the local runner and tests."""
    return os.environ.get(ENV_PVC_ROOT, PVC_ROOT)


def configmap_root() -> str:
    return os.environ.get(ENV_CONFIGMAP_ROOT, CONFIGMAP_ROOT)


def claim_mount_path(claim_name: str, root: str | None = None) -> str:
    """Mount path of a whole claim."""
    return str(PurePosixPath(root or pvc_root()) / claim_name)


def resolve_pvc_path(ref: PvcPath, root: str | None = None) -> str:
    """Filesystem path of a folder on a claim, as seen inside the pod (or under the local root)."""
    base = PurePosixPath(claim_mount_path(ref.claim_name, root))
    return str(base / ref.path) if ref.path else str(base)


def configmap_file_path(name: str, key: str, root: str | None = None) -> str:
    """Filesystem path of one ConfigMap key mounted as a file."""
    return str(PurePosixPath(root or configmap_root()) / name / key)


def adapter_path(output: PvcPath) -> PvcPath:
    """Where a trainer writing to `output` leaves the finished adapter."""
    return PvcPath(claim_name=output.claim_name, path=str(PurePosixPath(output.path or ".") / ADAPTER_DIR))


def spec_file_text(spec: FineTuneJobSpec) -> str:
    """The trainer's input file (`spec.json`): the validated spec, defaults filled in, camelCase."""
    return json.dumps(spec.to_wire(), indent=2, sort_keys=True)
