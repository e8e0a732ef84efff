"""SIGTERM (spot preemption, eviction, node drain, Kueue/priority preemption) ends a run without losing work.

The kubelet sends SIGTERM and waits the pod's terminationGracePeriodSeconds before SIGKILL. While training, the
handler only raises a flag; the callback turns it into "save a checkpoint and stop" at the end of the optimizer
step in progress, so at most that step's partial gradient accumulation is lost. The flow then ends with exit code
PREEMPTED, which the Job's podFailurePolicy ignores (not counted against backoffLimit): the next pod resumes from
that checkpoint. Outside the training loop there is nothing new to save (loading has not trained; training ends with
a checkpoint), and the handler ends the run at once.
"""

from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import Any

from transformers import TrainerCallback

from .errors import PreemptedError

log = logging.getLogger(__name__)


class PreemptionWatch:
    """Holds the SIGTERM flag for one run; install() in the main thread, restore() when the run ends."""

    def __init__(self) -> None:
        self.requested = False
        self.training = False
        self._previous: Any = None

    def install(self) -> PreemptionWatch:
        self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        if self.training:
            log.warning("SIGTERM: saving a checkpoint at the end of the current optimizer step, then stopping")
            return
        raise PreemptedError(
            "stopped by SIGTERM outside the training loop (loading, or evaluating and publishing after it); the "
            "next pod resumes from the newest checkpoint (training always ends with one)"
        )

    def stopped(self, step: int) -> PreemptedError:
        """The error that ends a run the callback stopped at `step` (its checkpoint is saved)."""
        return PreemptedError(
            f"stopped by SIGTERM at step {step}: checkpoint-{step} is saved and the next pod resumes from it"
        )


class PreemptionCallback(TrainerCallback):
    """At the end of each optimizer step: if SIGTERM arrived (on any process of a distributed run), save and stop."""

    def __init__(self, watch: PreemptionWatch) -> None:
        self.watch = watch

    def on_step_end(self, args, state, control, **kwargs):
        if _anyone(self.watch.requested, args):
            control.should_save = True
            control.should_training_stop = True
        return control


def _anyone(flag: bool, args: Any) -> bool:
    """True when any process saw SIGTERM: every process must save and stop at the same step (one tiny all-reduce
    per optimizer step; a no-op for a single process)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    import torch

    value = torch.tensor([1 if flag else 0], device=args.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
