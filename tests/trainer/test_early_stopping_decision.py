"""training.earlyStopping's decision, fed with fabricated evaluation histories: transformers' callback stops when it
should, the recount on resume agrees with it, and the stop summary says why in words."""

from __future__ import annotations

import pytest
from kubetune.api import FineTuneJobSpec
from kubetune_trainer.configs import build_configs
from kubetune_trainer.device import DeviceInfo
from kubetune_trainer.early_stopping import (
    KubetuneEarlyStopping,
    eval_history,
    evaluations_without_improvement,
    stop_summary,
)
from kubetune_trainer.errors import InvalidInputError
from transformers import TrainerControl, TrainerState, TrainingArguments

from tests.api.conftest import VALID_FTJ_SPEC


def _args(tmp_path) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(tmp_path),
        eval_strategy="steps",
        eval_steps=5,
        save_steps=5,
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        use_cpu=True,
        report_to="none",
    )


def _replay(callback: KubetuneEarlyStopping, args, losses: list[float]) -> tuple[TrainerState, int | None]:
    """Drive the callback as the Trainer does: on_evaluate sees the previous best, then the Trainer updates it.
    Returns the state and the step at which the callback asked to stop (None if it never did)."""
    state, control = TrainerState(), TrainerControl()
    callback.on_train_begin(args, state, control)
    for index, loss in enumerate(losses):
        state.global_step = 5 * (index + 1)
        state.log_history.append({"eval_loss": loss, "step": state.global_step})
        callback.on_evaluate(args, state, control, metrics={"eval_loss": loss})
        if state.best_metric is None or loss < state.best_metric:  # Trainer._determine_best_metric
            state.best_metric, state.best_global_step = loss, state.global_step
        if control.should_training_stop:
            return state, state.global_step
    return state, None


HISTORIES = [
    # (eval losses every 5 steps, patience, threshold, step at which training stops)
    ([2.0, 1.5, 1.2, 1.3, 1.4, 1.5, 1.0], 3, 0.0, 30),
    ([2.0, 1.5, 1.2, 1.3, 1.1, 1.15, 1.2], 3, 0.0, None),  # 1.1 improves: the count restarts
    ([2.0, 1.5, 1.2, 1.19, 1.18, 1.17], 3, 0.05, 30),  # decreases of 0.01 are below the threshold
    ([2.0, 2.0], 1, 0.0, 10),  # equal is no improvement
]


@pytest.mark.parametrize(("losses", "patience", "threshold", "stops_at"), HISTORIES)
def test_the_callback_stops_after_patience_evaluations_without_improvement(
    tmp_path, losses, patience, threshold, stops_at
):
    callback = KubetuneEarlyStopping(patience, threshold)
    state, stopped = _replay(callback, _args(tmp_path), losses)
    assert stopped == stops_at
    assert callback.stopped_at == stops_at
    seen = eval_history(state.log_history)
    assert evaluations_without_improvement(seen, threshold) == callback.early_stopping_patience_counter


def test_a_resumed_run_keeps_counting_where_the_checkpoint_left_off(tmp_path):
    """Two evaluations without improvement before a preemption, one after: with patience 3 it stops there."""
    args = _args(tmp_path)
    state, control = TrainerState(), TrainerControl()
    state.log_history = [{"eval_loss": loss, "step": 5 * (i + 1)} for i, loss in enumerate([2.0, 1.2, 1.3, 1.4])]
    resumed = KubetuneEarlyStopping(3, 0.0)
    resumed.on_train_begin(args, state, control)
    assert resumed.early_stopping_patience_counter == 2
    state.best_metric, state.global_step = 1.2, 25
    resumed.on_evaluate(args, state, control, metrics={"eval_loss": 1.25})
    assert control.should_training_stop and resumed.stopped_at == 25


def test_a_run_that_had_decided_to_stop_stops_again_on_resume(tmp_path):
    state, control = TrainerState(), TrainerControl()
    state.log_history = [{"eval_loss": loss, "step": 5 * (i + 1)} for i, loss in enumerate([1.0, 1.1, 1.2])]
    resumed = KubetuneEarlyStopping(2, 0.0)
    resumed.on_train_begin(_args(tmp_path), state, control)
    assert control.should_training_stop and resumed.stopped_at == 15


def _spec(**training) -> FineTuneJobSpec:
    return FineTuneJobSpec.model_validate({**VALID_FTJ_SPEC, "training": training})


LOG = [
    {"loss": 3.0, "step": 5},
    {"eval_loss": 2.0, "step": 5},
    {"eval_loss": 1.2345, "step": 10},
    {"eval_loss": 1.5, "step": 15},
    {"eval_loss": 1.6, "step": 20},
]


def test_the_summary_says_why_training_stopped_early():
    spec = _spec(maxSteps=100, evalSteps=5, saveSteps=5, earlyStopping={"patience": 2, "threshold": 0.01})
    summary = stop_summary(spec, LOG, 20, 20)
    assert summary.reason == "EarlyStopped" and summary.best_step == 10
    assert summary.message == (
        "eval loss did not improve by more than 0.01 for 2 evaluations after step 10 (best eval loss 1.2345 at "
        "step 10); stopped at step 20 of 100 planned"
    )


def test_the_summary_names_max_steps_and_epochs():
    assert stop_summary(_spec(maxSteps=20), LOG, 20, None).reason == "MaxSteps"
    epochs = stop_summary(_spec(epochs=2), [], 8, None)
    assert (epochs.reason, epochs.best_step) == ("Epochs", None)
    assert epochs.message == "completed training.epochs 2 in 8 steps (no evaluation during training)"


def test_early_stopping_implies_publishing_the_best_checkpoint(tmp_path):
    spec = _spec(maxSteps=100, evalSteps=5, saveSteps=10, earlyStopping={"patience": 2})
    sft = build_configs(spec, checkpoints_dir=tmp_path, device=DeviceInfo(kind="cpu"), has_eval=True).sft
    assert sft.load_best_model_at_end and sft.metric_for_best_model == "eval_loss" and not sft.greater_is_better
    assert (sft.eval_strategy, sft.eval_steps, sft.save_steps) == ("steps", 5, 10)


def test_early_stopping_without_evaluation_rows_is_refused(tmp_path):
    spec = _spec(evalSteps=5, saveSteps=5, earlyStopping={})
    with pytest.raises(InvalidInputError, match=r"training\.earlyStopping needs evaluation rows"):
        build_configs(spec, checkpoints_dir=tmp_path, device=DeviceInfo(kind="cpu"), has_eval=False)


def test_the_published_checkpoints_own_eval_loss_is_reported():
    """With saveSteps 10 and evalSteps 5 the best evaluation (step 15) has no checkpoint: the Trainer publishes the
    best saved one (step 10), and evalLoss must be step 10's, not the best evaluation's."""
    from types import SimpleNamespace

    from kubetune_trainer.flow import _final_evaluation, _published_step

    history = [{"eval_loss": 1.5, "step": 5}, {"eval_loss": 1.2, "step": 10}, {"eval_loss": 1.0, "step": 15}]
    state = SimpleNamespace(
        best_model_checkpoint="/out/checkpoints/checkpoint-10", best_metric=1.0, log_history=history, global_step=20
    )
    trainer = SimpleNamespace(args=SimpleNamespace(load_best_model_at_end=True), state=state)
    assert _published_step(trainer) == 10
    assert _final_evaluation(trainer) == {"eval_loss": 1.2}
