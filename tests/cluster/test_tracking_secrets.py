"""Experiment-tracking Secrets on the real control plane: the trainer pod the kube-controller-manager creates
references the MLflow and W&B Secrets by name (envFrom), the operator never reads them, and their values appear in
no object it writes (Job, Pod, ConfigMap, FineTuneJob status, Events)."""

from __future__ import annotations

import json

from tests.support.envtest.fixtures import OPERATOR_USER, RealCluster, RealOperatorControl
from tests.support.envtest.kubelet import FakeKubelet
from tests.support.kube.server import CONFIGMAPS, EVENTS, FTJ, JOBS, SECRETS, KubeTestClient

from .helpers import exists, finetunejob, wait_phase, wait_until

SENTINEL = "tracking-secret-value-never-copied"
TIMEOUT = 30


def settings_secret(name: str, data: dict[str, str]) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}


def test_the_trainer_pod_references_the_tracking_secrets_and_nothing_copies_their_values(
    control_plane: RealCluster, operator: RealOperatorControl, kube: KubeTestClient, kubelet: FakeKubelet, ns: str
):
    mlflow = {"MLFLOW_TRACKING_URI": "http://mlflow:5000", "MLFLOW_TRACKING_PASSWORD": SENTINEL}
    kube.create(SECRETS, ns, settings_secret("mlflow", mlflow))
    kube.create(SECRETS, ns, settings_secret("wandb", {"WANDB_API_KEY": SENTINEL}))
    since = control_plane.audit.offset()
    tracking = {"mlflow": {"secretName": "mlflow", "experimentName": "team-a"}, "wandb": {"secretName": "wandb"}}
    kube.create(FTJ, ns, finetunejob(ns, tracking=tracking))
    kube.wait_for(JOBS, ns, "sentiment-train", exists, TIMEOUT)
    kubelet.start_job(ns, "sentiment-train")
    [pod] = wait_until(lambda: kubelet.pods_of(ns, "sentiment-train"), "the trainer pod")

    [container] = pod["spec"]["containers"]
    assert container["envFrom"] == [{"secretRef": {"name": "mlflow"}}, {"secretRef": {"name": "wandb"}}]

    kubelet.finish_job(ns, "sentiment-train", 0, "{}")
    wait_phase(kube, ns, "sentiment", "Succeeded")
    written = [
        kube.get(FTJ, ns, "sentiment"),
        kube.get(JOBS, ns, "sentiment-train"),
        pod,
        *kube.list(CONFIGMAPS, ns),
        *kube.list(EVENTS, ns),
    ]
    assert SENTINEL not in json.dumps(written)
    operator_secret_requests = [e for e in control_plane.audit.events(since, OPERATOR_USER) if e.resource == "secrets"]
    assert operator_secret_requests == [], "the operator needs no access to Secrets: the kubelet resolves envFrom"
