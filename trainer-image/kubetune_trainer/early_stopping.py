"""training.earlyStopping with transformers' EarlyStoppingCallback, and the account of why a run ended.

The callback counts evaluations without improvement; this subclass remembers the step at which that count reached
the patience (so the status can say training stopped early, and why), and on a resumed run recounts from the
evaluation history the checkpoint carries, so a preemption does not reset the patience."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from kubetune.api import FineTuneJobSpec
from kubetune.api.training_controls import EarlyStoppingSpec, StopReason
from transformers import EarlyStoppingCallback

log = logging.getLogger(__name__)

METRIC = "eval_loss"


def eval_history(log_history: list[dict]) -> list[tuple[int, float]]:
    """(step, eval loss) of every evaluation during training, in order."""
    return [(int(entry["step"]), float(entry[METRIC])) for entry in log_history if METRIC in entry and "step" in entry]


def evaluations_without_improvement(history: list[tuple[int, float]], threshold: float) -> int:
    """The callback's counter after seeing `history`: evaluations since the last one that beat the best loss so far
    by more than `threshold` (the Trainer's best moves on any decrease, as in transformers)."""
    best, count = None, 0
    for _, loss in history:
        if best is None or (loss < best and best - loss > threshold):
            count = 0
        else:
            count += 1
        if best is None or loss < best:
            best = loss
    return count


def best_evaluation(history: list[tuple[int, float]]) -> tuple[int, float] | None:
    """The first evaluation with the lowest loss (the one the Trainer keeps as best)."""
    finite = [(step, loss) for step, loss in history if math.isfinite(loss)]
    return min(finite, key=lambda item: item[1]) if finite else None


class KubetuneEarlyStopping(EarlyStoppingCallback):
    """transformers' EarlyStoppingCallback that records when (at which global step) it stopped training."""

    def __init__(self, early_stopping_patience: int = 1, early_stopping_threshold: float | None = 0.0) -> None:
        super().__init__(early_stopping_patience, early_stopping_threshold)
        self.stopped_at: int | None = None

    @classmethod
    def from_spec(cls, spec: EarlyStoppingSpec) -> KubetuneEarlyStopping:
        return cls(early_stopping_patience=spec.patience, early_stopping_threshold=spec.threshold)

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        history = eval_history(state.log_history)  # non-empty only when resuming from a checkpoint
        self.early_stopping_patience_counter = evaluations_without_improvement(
            history, self.early_stopping_threshold or 0.0
        )
        if history:
            log.info(
                "early stopping resumes with %d of %d evaluations without improvement",
                self.early_stopping_patience_counter,
                self.early_stopping_patience,
            )
            if self.early_stopping_patience_counter >= self.early_stopping_patience:
                # It had decided to stop before the restart: stop again (the Trainer ends after the step under way).
                self.stopped_at = history[-1][0]
                control.should_training_stop = True
        return control

    def on_evaluate(self, args, state, control, metrics, **kwargs):
        super().on_evaluate(args, state, control, metrics, **kwargs)
        if self.stopped_at is None and self.early_stopping_patience_counter >= self.early_stopping_patience:
            self.stopped_at = state.global_step
            log.info(
                "early stopping at step %d: eval loss did not improve for %d evaluations",
                state.global_step,
                self.early_stopping_patience_counter,
            )
        return control


@dataclass(frozen=True)
class StopSummary:
    """Why training ended, for TrainingMetrics (stopReason, stopMessage, bestStep)."""

    reason: StopReason
    message: str
    best_step: int | None


def stop_summary(
    spec: FineTuneJobSpec, log_history: list[dict], global_step: int, stopped_early_at: int | None
) -> StopSummary:
    """Name the reason training ended and say it in words, with the best evaluation when there was one."""
    history = eval_history(log_history)
    best = best_evaluation(history)
    best_words = f"best eval loss {best[1]:.4f} at step {best[0]}" if best else "no evaluation during training"
    training = spec.training
    if stopped_early_at is not None and training.early_stopping is not None:
        rule = training.early_stopping
        by = f"by more than {rule.threshold:g} " if rule.threshold else ""
        since = f" after step {best[0]}" if best else ""
        planned = f" of {training.max_steps} planned" if training.max_steps else ""
        message = (
            f"eval loss did not improve {by}for {rule.patience} evaluations{since} ({best_words}); "
            f"stopped at step {stopped_early_at}{planned}"
        )
        return StopSummary("EarlyStopped", message, best[0] if best else None)
    if training.max_steps:
        return StopSummary("MaxSteps", f"reached training.maxSteps {training.max_steps} ({best_words})", _step(best))
    message = f"completed training.epochs {training.epochs:g} in {global_step} steps ({best_words})"
    return StopSummary("Epochs", message, _step(best))


def _step(best: tuple[int, float] | None) -> int | None:
    return best[0] if best else None
