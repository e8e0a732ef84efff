"""What keeps the operator cheap and peaceful at scale, on the real control plane: the API server filters its child
watches (label selectors in the watch requests, from the audit log), and the ModelServe drift repair leaves the
server Deployment's `replicas` to an autoscaler that took it over through the scale subresource."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from urllib.parse import parse_qs, urlsplit

from tests.support.envtest.fixtures import RealCluster, RealOperatorControl
from tests.support.envtest.kubelet import FakeKubelet
from tests.support.kube.server import CONFIGMAPS, DEPLOYMENTS, FTJ, JOBS, MSV, KubeTestClient, resource_path

from .helpers import exists, finetunejob, modelserve, operator_requests, wait_phase

TIMEOUT = 30
BENCH = Path(__file__).resolve().parents[2] / "bench" / "operator_scale.py"
HPAS = ("autoscaling/v2", "horizontalpodautoscalers")
CACHED_ONLY = ("configmaps", "persistentvolumeclaims", "serviceaccounts", "roles", "rolebindings")


def test_child_watches_are_filtered_by_the_api_server(control_plane: RealCluster, operator: RealOperatorControl):
    """kopf's `labels=` handler filter is client-side: without a selector in the request the server would send every
    Job, Deployment and Service of the namespace. The audit log shows what the operator really asked for."""
    selectors: dict[str, set[str]] = {}
    watched = ("jobs", "deployments", "services", "finetunejobs", *CACHED_ONLY)
    for event in [
        e for resource in watched for e in operator_requests(control_plane, operator.since, "watch", resource)
    ]:
        query = parse_qs(urlsplit(event.uri).query)
        selectors.setdefault(event.resource, set()).update(query.get("labelSelector", [""]))
    assert selectors == {
        "jobs": {"kubetune.dev/finetunejob"},
        "deployments": {"kubetune.dev/modelserve"},
        "services": {"kubetune.dev/modelserve"},
        "finetunejobs": {""},
        "configmaps": {"app.kubernetes.io/managed-by=kubetune-operator"},
        "persistentvolumeclaims": {"kubetune.dev/finetunejob"},
        "serviceaccounts": {"kubetune.dev/finetunejob"},
        "roles": {"kubetune.dev/finetunejob"},
        "rolebindings": {"kubetune.dev/finetunejob"},
    }, "children are watched by our labels only; the custom resources are watched whole"


def test_children_are_read_from_the_watches_and_a_deleted_one_returns_at_once(
    control_plane: RealCluster, operator: RealOperatorControl, kube: KubeTestClient, kubelet: FakeKubelet, ns: str
):
    """The children a reconcile checks come from kopf's indices of the watches: a whole lifecycle GETs none of
    them (it GOT each of the five twice before). A spec ConfigMap deleted under a running job is re-created on its
    DELETED event (before: at the next Job event or the resync pass), after one GET that confirms it is gone."""
    since = control_plane.audit.offset()
    ftj = kube.create(FTJ, ns, finetunejob(ns))
    kube.wait_for(JOBS, ns, "sentiment-train", exists, TIMEOUT)
    kubelet.start_job(ns, "sentiment-train")
    wait_phase(kube, ns, "sentiment", "Running")
    deleted = kube.get(CONFIGMAPS, ns, "sentiment-spec")["metadata"]["uid"]
    kube.delete(CONFIGMAPS, ns, "sentiment-spec")
    uid = ftj["metadata"]["uid"]
    again = kube.wait_for(CONFIGMAPS, ns, "sentiment-spec", lambda cm: cm and cm["metadata"]["uid"] != deleted, 10)
    assert again["metadata"]["ownerReferences"][0]["uid"] == uid
    kubelet.finish_job(ns, "sentiment-train", 0, "{}")
    wait_phase(kube, ns, "sentiment", "Succeeded")
    reads = [
        (e.resource, e.name, e.code)
        for resource in CACHED_ONLY
        for e in operator_requests(control_plane, since, "get", resource)
        if e.namespace == ns
    ]
    assert reads == [("configmaps", "sentiment-spec", 404)], reads


def _train(kube: KubeTestClient, kubelet: FakeKubelet, ns: str) -> None:
    kube.create(FTJ, ns, finetunejob(ns))
    kube.wait_for(JOBS, ns, "sentiment-train", exists, TIMEOUT)
    kubelet.start_job(ns, "sentiment-train")
    kubelet.finish_job(ns, "sentiment-train", 0, "{}")
    wait_phase(kube, ns, "sentiment", "Succeeded")


def _scale_as_the_hpa_controller(kube: KubeTestClient, ns: str, name: str, replicas: int) -> None:
    """What the HorizontalPodAutoscaler controller does: write `spec.replicas` through the scale subresource, under
    its own field manager (this control plane runs no HPA controller: the test plays it)."""
    path = resource_path(*DEPLOYMENTS, ns, name) + "/scale"
    response = kube.http.patch(
        path,
        params={"fieldManager": "horizontal-pod-autoscaler"},
        content=f'{{"spec": {{"replicas": {replicas}}}}}',
        headers={"Content-Type": "application/merge-patch+json"},
    )
    kube._check(response)


def test_repair_leaves_replicas_to_an_autoscaler(
    control_plane: RealCluster, operator: RealOperatorControl, kube: KubeTestClient, kubelet: FakeKubelet, ns: str
):
    _train(kube, kubelet, ns)
    kube.create(MSV, ns, modelserve(ns))
    kube.wait_for(DEPLOYMENTS, ns, "chat", exists, TIMEOUT)
    kubelet.deployment_ready(ns, "chat")
    wait_phase(kube, ns, "chat", "Ready", res=MSV)
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "chat", "namespace": ns},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "chat"},
            "minReplicas": 1,
            "maxReplicas": 5,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
                }
            ],
        },
    }
    kube.create(HPAS, ns, hpa)
    since = control_plane.audit.offset()

    _scale_as_the_hpa_controller(kube, ns, "chat", 3)
    kubelet.deployment_ready(ns, "chat", 3)
    # The operator follows the rollout (Deployment events) and writes readyReplicas 3 to the ModelServe status; it
    # applies child patches before the status, so once the status says 3 that reconcile's repairs were sent.
    kube.wait_for(MSV, ns, "chat", lambda m: (m.get("status") or {}).get("readyReplicas") == 3, TIMEOUT)

    assert kube.get(DEPLOYMENTS, ns, "chat")["spec"]["replicas"] == 3
    patches = [e.name for e in operator_requests(control_plane, since, "patch", "deployments")]
    assert patches == [], "the operator does not take replicas back from the autoscaler"


def test_a_modelserve_an_autoscaler_scaled_down_stays_ready(
    control_plane: RealCluster, operator: RealOperatorControl, kube: KubeTestClient, kubelet: FakeKubelet, ns: str
):
    """Once an autoscaler owns the Deployment's size, the rollout is judged against the Deployment's replicas, not
    spec.replicas: fewer replicas than the spec asked for is the autoscaler's decision, not a stuck rollout."""
    kube.create(MSV, ns, modelserve(ns, "plain", jobs=(), baseModel={"name": "org/base"}, replicas=2))
    kube.wait_for(DEPLOYMENTS, ns, "plain", exists, TIMEOUT)
    kubelet.deployment_ready(ns, "plain")
    wait_phase(kube, ns, "plain", "Ready", res=MSV)

    _scale_as_the_hpa_controller(kube, ns, "plain", 1)
    kubelet.deployment_ready(ns, "plain", 1)
    kube.wait_for(
        DEPLOYMENTS, ns, "plain", lambda d: (d.get("status") or {}).get("replicas") == 1, TIMEOUT, what="to scale down"
    )
    served = kube.wait_for(MSV, ns, "plain", lambda m: (m.get("status") or {}).get("readyReplicas") == 1, TIMEOUT)
    assert served["status"]["phase"] == "Ready", served["status"]["message"]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("operator_scale", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scale_benchmark_runs_three_lifecycles(control_plane: RealCluster, kubelet: FakeKubelet, tmp_path: Path):
    """Smoke test of `bench/operator_scale.py` (N=3) on the session's control plane: every lifecycle completes
    with the operator as its own process, and the audit log shows each request the minimum counts, per job."""
    bench = _bench()
    result = bench.run(control_plane, 3, TIMEOUT, tmp_path)
    assert result["refused"] == 0
    per_job = result["breakdown"]
    assert per_job["create jobs"] == 1 and per_job["patch finetunejobs/status"] >= 3 and per_job["list pods"] >= 1
    assert result["requests_per_lifecycle"] >= bench.minimum()
