"""The operator uses only children whose controller reference is its own object's uid, on the real control plane:
a teammate's object named like a child is never patched (the custom resource shows ChildConflict), a
predecessor's children (a FineTuneJob deleted and re-created under the same name) are waited for, and every
child is ensured while the trainer runs (a deleted one comes back)."""

from __future__ import annotations

from typing import Any

from kubetune.api.runtime import SPEC_FILE

from tests.support.envtest.fixtures import RealCluster, RealOperatorControl
from tests.support.envtest.kubelet import FakeKubelet
from tests.support.kube.server import (
    CONFIGMAPS,
    DEPLOYMENTS,
    FTJ,
    JOBS,
    MSV,
    PVCS,
    ROLEBINDINGS,
    KubeTestClient,
)

from .helpers import (
    SENTIMENT_CHILDREN,
    condition,
    exists,
    finetunejob,
    gone,
    modelserve,
    operator_requests,
    wait_event,
    wait_phase,
    wait_until,
)

TIMEOUT = 30  # generous for a loaded 2-core box; every wait returns as soon as its condition holds
HOLD = "example.com/hold"  # a finalizer of someone else's (a backup tool, a test) that keeps an object Terminating
TRAINER_CHILDREN = SENTIMENT_CHILDREN


def controller_uid(obj: dict[str, Any] | None) -> str | None:
    refs = ((obj or {}).get("metadata") or {}).get("ownerReferences") or []
    return next((ref["uid"] for ref in refs if ref.get("controller")), None)


def conflict(kube: KubeTestClient, ns: str, name: str, res: tuple[str, str] = FTJ) -> dict[str, Any] | None:
    """The ChildConflict condition when it is True."""
    found = condition(kube.get(res, ns, name), "ChildConflict")
    return found if found and found["status"] == "True" else None


def teammates_deployment(name: str) -> dict[str, Any]:
    """A Deployment someone else runs, named like the ModelServe's server (0 replicas: no pod is needed)."""
    labels = {"app": "teammate"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}},
        },
    }


def test_a_teammates_deployment_named_like_a_modelserve_is_never_modified(
    control_plane: RealCluster, operator: RealOperatorControl, kube: KubeTestClient, kubelet: FakeKubelet, ns: str
):
    theirs = kube.create(DEPLOYMENTS, ns, teammates_deployment("chat"))
    kube.create(FTJ, ns, finetunejob(ns))
    kube.wait_for(JOBS, ns, "sentiment-train", exists, TIMEOUT)
    kubelet.start_job(ns, "sentiment-train")
    kubelet.finish_job(ns, "sentiment-train", 0, "{}")
    wait_phase(kube, ns, "sentiment", "Succeeded")
    since = control_plane.audit.offset()

    kube.create(MSV, ns, modelserve(ns))
    found = wait_until(lambda: conflict(kube, ns, "chat", MSV), "for ChildConflict on the ModelServe", TIMEOUT)
    assert found["reason"] == "Foreign"
    assert "Deployment/chat" in found["message"] and "no controller" in found["message"]
    ready = condition(kube.get(MSV, ns, "chat"), "Ready")
    assert ready is not None and ready["status"] == "False" and "Deployment/chat" in ready["message"]
    wait_event(kube, ns, "chat", "ChildConflict")

    after = kube.get(DEPLOYMENTS, ns, "chat")
    assert after["metadata"]["generation"] == theirs["metadata"]["generation"]  # the controller writes status only
    assert after["metadata"]["labels"] == theirs["metadata"]["labels"] and after["spec"] == theirs["spec"]
    assert controller_uid(after) is None and after["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx"
    writes = [
        e
        for verb in ("patch", "update", "delete")
        for e in operator_requests(control_plane, since, verb, "deployments")
    ]
    assert writes == []

    # The teammate removes theirs: the next retry creates the server, and the conflict is over.
    kube.delete(DEPLOYMENTS, ns, "chat")
    mine = kube.wait_for(DEPLOYMENTS, ns, "chat", lambda d: controller_uid(d) is not None, TIMEOUT)
    assert controller_uid(mine) == kube.get(MSV, ns, "chat")["metadata"]["uid"]
    wait_until(lambda: conflict(kube, ns, "chat", MSV) is None, "for ChildConflict to clear", TIMEOUT)
    assert condition(kube.get(MSV, ns, "chat"), "ChildConflict")["reason"] == "Resolved"


def test_a_finetunejob_recreated_under_its_name_waits_for_its_predecessors_children(
    control_plane: RealCluster, operator: RealOperatorControl, kube: KubeTestClient, kubelet: FakeKubelet, ns: str
):
    """The natural retrain (or Argo CD Replace=true): the old children go with the old object; the new object
    must not adopt them (the garbage collector would delete them under it) but wait and create its own."""
    old = kube.create(FTJ, ns, finetunejob(ns))
    kube.wait_for(JOBS, ns, "sentiment-train", exists, TIMEOUT)
    kubelet.start_job(ns, "sentiment-train")
    wait_phase(kube, ns, "sentiment", "Running")
    kube.patch(CONFIGMAPS, ns, "sentiment-spec", {"metadata": {"finalizers": [HOLD]}})

    kube.delete(FTJ, ns, "sentiment")
    kube.wait_for(FTJ, ns, "sentiment", gone, TIMEOUT)
    new = kube.create(FTJ, ns, finetunejob(ns))
    assert new["metadata"]["uid"] != old["metadata"]["uid"]
    kube.wait_for(
        CONFIGMAPS,
        ns,
        "sentiment-spec",
        lambda cm: cm is not None and bool(cm["metadata"].get("deletionTimestamp")),
        TIMEOUT,
    )
    found = wait_until(lambda: conflict(kube, ns, "sentiment"), "for ChildConflict on the new FineTuneJob", TIMEOUT)
    assert found["reason"] in ("Terminating", "PreviousOwner") and "ConfigMap/sentiment-spec" in found["message"]
    kube.wait_for(JOBS, ns, "sentiment-train", gone, TIMEOUT)  # the garbage collector removes the old Job
    assert controller_uid(kube.get(CONFIGMAPS, ns, "sentiment-spec")) == old["metadata"]["uid"]  # not adopted

    kube.patch(CONFIGMAPS, ns, "sentiment-spec", {"metadata": {"finalizers": None}})
    uid = new["metadata"]["uid"]
    for res, name in TRAINER_CHILDREN:
        kube.wait_for(res, ns, name, lambda obj: controller_uid(obj) == uid, TIMEOUT)
    assert not kube.get(PVCS, ns, "sentiment-output")["metadata"].get("deletionTimestamp")
    kubelet.start_job(ns, "sentiment-train")
    kubelet.finish_job(ns, "sentiment-train", 0, "{}")
    done = wait_phase(kube, ns, "sentiment", "Succeeded")
    assert condition(done, "ChildConflict")["status"] == "False"


def test_children_deleted_under_a_running_job_come_back(
    control_plane: RealCluster, operator: RealOperatorControl, kube: KubeTestClient, kubelet: FakeKubelet, ns: str
):
    ftj = kube.create(FTJ, ns, finetunejob(ns))
    kube.wait_for(JOBS, ns, "sentiment-train", exists, TIMEOUT)
    kube.delete(CONFIGMAPS, ns, "sentiment-spec")
    kube.delete(ROLEBINDINGS, ns, "sentiment-trainer")
    kube.wait_for(CONFIGMAPS, ns, "sentiment-spec", gone, TIMEOUT)

    kubelet.start_job(ns, "sentiment-train")  # the Job's change makes the operator reconcile
    wait_phase(kube, ns, "sentiment", "Running")
    uid = ftj["metadata"]["uid"]
    spec = kube.wait_for(CONFIGMAPS, ns, "sentiment-spec", lambda cm: controller_uid(cm) == uid, TIMEOUT)
    assert set(spec["data"]) == {SPEC_FILE}
    kube.wait_for(ROLEBINDINGS, ns, "sentiment-trainer", lambda rb: controller_uid(rb) == uid, TIMEOUT)


def test_a_foreign_child_under_a_running_job_is_reported_and_the_job_still_finishes(
    control_plane: RealCluster, operator: RealOperatorControl, kube: KubeTestClient, kubelet: FakeKubelet, ns: str
):
    """Someone replaced the trainer's RoleBinding with their own: shown, never patched, and the status still
    follows the trainer Job to its end."""
    kube.create(FTJ, ns, finetunejob(ns))
    kube.wait_for(JOBS, ns, "sentiment-train", exists, TIMEOUT)
    kube.delete(ROLEBINDINGS, ns, "sentiment-trainer")
    kube.wait_for(ROLEBINDINGS, ns, "sentiment-trainer", gone, TIMEOUT)
    theirs = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "sentiment-trainer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}],
    }
    kube.create(ROLEBINDINGS, ns, theirs)

    kubelet.start_job(ns, "sentiment-train")
    wait_phase(kube, ns, "sentiment", "Running")
    found = wait_until(lambda: conflict(kube, ns, "sentiment"), "for ChildConflict on the FineTuneJob", TIMEOUT)
    assert found["reason"] == "Foreign" and "RoleBinding/sentiment-trainer" in found["message"]
    wait_event(kube, ns, "sentiment", "ChildConflict")

    kubelet.finish_job(ns, "sentiment-train", 0, "{}")
    done = wait_phase(kube, ns, "sentiment", "Succeeded")
    assert condition(done, "ChildConflict")["status"] == "True"  # still true: theirs is still there
    after = kube.get(ROLEBINDINGS, ns, "sentiment-trainer")
    assert (
        controller_uid(after) is None and after["roleRef"]["name"] == "view" and after["subjects"] == theirs["subjects"]
    )
