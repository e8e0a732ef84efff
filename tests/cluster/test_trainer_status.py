"""What the trainer writes into `.status` while it trains and when it ends, as the real API server stores it and as
`kubectl get ftj` shows it: the trainer's own status client and progress callback, with the token of the trainer
account the operator renders (patch on its own finetunejobs/status only).

A field the CRD schema does not declare is pruned by the server without an error, so the row counts and the
generation-metrics method are read back from the stored object; the EVAL LOSS column is read from the server's
Table rendering (what kubectl prints), during training and at the end.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from kubetune.api import Progress, TrainingMetrics
from kubetune.operator.manifests.meta import Owner
from kubetune.operator.manifests.trainer import trainer_rbac
from kubetune_trainer.generation_eval import METHOD
from kubetune_trainer.kube_status import KubeStatusClient
from kubetune_trainer.reporting import KubeStatusSink, ProgressCallback

from tests.support.envtest.fixtures import RealCluster
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


def _trainer_client(cluster: RealCluster, ns: str, owner_body: dict[str, Any], tmp_path: Path) -> KubeStatusClient:
    """The trainer's status client, authenticated as the trainer account with the operator's Role."""
    owner = Owner.of(owner_body)
    for manifest in trainer_rbac(owner):
        api_version, kind = manifest["apiVersion"], manifest["kind"]
        plural = {"ServiceAccount": "serviceaccounts", "Role": "roles", "RoleBinding": "rolebindings"}[kind]
        cluster.admin.create((api_version, plural), ns, manifest)
    account = trainer_rbac(owner)[0]["metadata"]["name"]
    token_file = tmp_path / "token"
    token_file.write_text(cluster.plane.service_account_token(ns, account))
    assert cluster.plane.pki is not None
    context = ssl.create_default_context(cafile=str(cluster.plane.pki.ca))
    return KubeStatusClient(cluster.plane.url, ns, owner.name, token_file, context)


def test_eval_loss_column_fills_while_training_and_row_counts_reach_the_status(
    control_plane: RealCluster, kube: KubeTestClient, ns: str, tmp_path: Path
):
    body = kube.create(FTJ, ns, finetunejob(ns))
    client = _trainer_client(control_plane, ns, body, tmp_path)
    clock = Clock()
    callback = ProgressCallback(KubeStatusSink(client), min_interval=30.0, clock=clock)
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
    KubeStatusSink(client).finish(final, metrics)
    stored = kube.get(FTJ, ns, "sentiment")["status"]["metrics"]
    assert stored == metrics.to_wire(), "no field pruned by the CRD schema"
    assert (stored["truncatedRows"], stored["droppedRows"], stored["skippedRows"]) == (3, 1, 2)
    assert stored["generationMetrics"] == METHOD
    assert _columns(kube, ns, "sentiment")["Eval Loss"] == 0.5
