"""What the trainer reports while it trains and when it ends, once in `.status`, as the real API server stores it
and as `kubectl get ftj` shows it: the trainer's own progress callback (throttled reports).

A field the CRD schema does not declare is pruned by the server without an error, so the row counts and the
generation-metrics method are read back from the stored object; the EVAL LOSS column is read from the server's
Table rendering (what kubectl prints), during training and at the end.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from kubetune.api import Progress, TrainingMetrics
from kubetune_trainer.generation_eval import METHOD
from kubetune_trainer.reporting import ProgressCallback

from tests.support.kube.server import FTJ, KubeTestClient, resource_path

from .helpers import finetunejob

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _state(step: int) -> SimpleNamespace:
    return SimpleNamespace(global_step=step, max_steps=20, epoch=step / 10, is_world_process_zero=True)


def _columns(kube: KubeTestClient, ns: str, name: str) -> dict[str, Any]:
    """The printer columns of one FineTuneJob, as the server renders them for `kubectl get ftj`."""
    response = kube.http.get(resource_path(*FTJ, ns, name), headers={"Accept": TABLE})
    response.raise_for_status()
    table = response.json()
    [row] = table["rows"]
    return dict(zip((column["name"] for column in table["columnDefinitions"]), row["cells"], strict=True))


class StatusAsTheOperatorCopiesIt:
    """The trainer writes progress and metrics into its report ConfigMap; the operator copies them into `.status`
    as they are (reconcile/report.py). This sink writes them there directly, as that copy does."""

    def __init__(self, kube: KubeTestClient, ns: str, name: str) -> None:
        self.kube, self.ns, self.name = kube, ns, name

    def report(self, progress: Progress) -> None:
        self.kube.patch(FTJ, self.ns, self.name, {"status": {"progress": progress.to_wire()}}, "status")

    def finish(self, progress: Progress, metrics: TrainingMetrics) -> None:
        body = {"status": {"progress": progress.to_wire(), "metrics": metrics.to_wire()}}
        self.kube.patch(FTJ, self.ns, self.name, body, "status")


def test_eval_loss_column_fills_while_training_and_row_counts_reach_the_status(kube: KubeTestClient, ns: str):
    kube.create(FTJ, ns, finetunejob(ns))
    sink = StatusAsTheOperatorCopiesIt(kube, ns, "sentiment")
    clock = Clock()
    callback = ProgressCallback(sink, min_interval=30.0, clock=clock)
    callback.on_train_begin(None, _state(0), None)
    assert _columns(kube, ns, "sentiment")["Eval Loss"] is None, "no evaluation yet"

    clock.now = 40.0  # the first evaluation, at step 10: the next throttled report carries it
    callback.on_log(None, _state(10), None, logs={"eval_loss": 0.8125})
    assert _columns(kube, ns, "sentiment")["Eval Loss"] == 0.8125, "visible during training, not only at the end"
    assert kube.get(FTJ, ns, "sentiment")["status"]["progress"]["percent"] == 50

    clock.now = 50.0  # a second evaluation within 30 s of the last report: held back by the throttle...
    callback.on_log(None, _state(15), None, logs={"eval_loss": 0.625})
    assert _columns(kube, ns, "sentiment")["Eval Loss"] == 0.8125
    clock.now = 75.0  # ...and sent with the next report
    callback.on_step_end(None, _state(16), None)
    assert _columns(kube, ns, "sentiment")["Eval Loss"] == 0.625

    metrics = TrainingMetrics(
        train_loss=0.7,
        eval_loss=0.5,
        steps=20,
        rouge_l=0.75,
        bleu=0.5,
        generation_metrics=METHOD,
        truncated_rows=3,
        dropped_rows=1,
        skipped_rows=2,
    )
    final = Progress(step=20, total_steps=20, percent=100, eval_loss=metrics.eval_loss)
    sink.finish(final, metrics)
    stored = kube.get(FTJ, ns, "sentiment")["status"]["metrics"]
    assert stored == metrics.to_wire(), "no field pruned by the CRD schema"
    assert (stored["truncatedRows"], stored["droppedRows"], stored["skippedRows"]) == (3, 1, 2)
    assert stored["generationMetrics"] == METHOD
    assert _columns(kube, ns, "sentiment")["Eval Loss"] == 0.5
