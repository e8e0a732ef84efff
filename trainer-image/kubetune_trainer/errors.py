"""Failures the trainer understands, each mapped to one documented exit code (`runtime.TrainerExit`).

The operator turns exit codes into failure reasons and decides whether a retry can help, so every error
that reaches `main()` must be classified here rather than guessed from its message later.
"""

from __future__ import annotations

from kubetune.api.runtime import TrainerExit


class TrainerFailure(Exception):
    """An expected failure with a clear message and the exit code that tells the operator what happened."""

    exit_code: TrainerExit = TrainerExit.ERROR


class InvalidInputError(TrainerFailure):
    """The spec or the dataset is wrong: retrying the same job cannot help."""

    exit_code = TrainerExit.INVALID_INPUT


class ModelLoadError(TrainerFailure):
    """The base model could not be loaded (missing path, no access, network)."""

    exit_code = TrainerExit.MODEL_LOAD


class OutputLockedError(TrainerFailure):
    """Another trainer is writing to the same output folder."""

    exit_code = TrainerExit.OUTPUT_LOCKED


class NetworkError(TrainerFailure):
    """The Hub or a download kept failing with a transient error after bounded retries: a later pod may succeed."""

    exit_code = TrainerExit.NETWORK


class PreemptedError(TrainerFailure):
    """SIGTERM arrived: the last optimizer step is checkpointed (when training had started) and the pod ends."""

    exit_code = TrainerExit.PREEMPTED


def is_out_of_memory(error: BaseException) -> bool:
    """True for accelerator or host out-of-memory errors, however torch happens to spell them."""
    if isinstance(error, MemoryError):
        return True
    try:
        import torch

        if isinstance(error, torch.OutOfMemoryError):
            return True
    except ImportError:  # pragma: no cover - torch is always installed in the image
        pass
    text = str(error)
    return "out of memory" in text.lower() and ("CUDA" in text or "allocate" in text)


def exit_code_for(error: BaseException) -> TrainerExit:
    """The exit code of any exception that ends the trainer."""
    if isinstance(error, TrainerFailure):
        return error.exit_code
    if is_out_of_memory(error):
        return TrainerExit.OUT_OF_MEMORY
    return TrainerExit.ERROR
