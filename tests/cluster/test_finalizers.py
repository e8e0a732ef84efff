"""No finalizer on kubetune objects (issue 11, point 4): owner references and the real garbage collector clean up,
so a FineTuneJob, and its namespace, can be deleted while the operator is down, uninstalled, or not watching
(Argo CD prune, `kubectl delete namespace`). Objects an older operator finalized are released when it starts."""

from __future__ import annotations

from tests.support.envtest.fixtures import NAMESPACES, RealOperatorControl
from tests.support.kube.server import FTJ, JOBS, MSV, PODS

from .helpers import (
    SENTIMENT_CHILDREN,
    delete,
    exists,
    finetunejob,
    gone,
    modelserve,
    operator_requests,
    wait_phase,
    wait_until,
)

OLD_FINALIZER = "kubetune.dev/finalizer"
CHILDREN = SENTIMENT_CHILDREN
JOB_PODS = "batch.kubernetes.io/job-name=sentiment-train"
NAMESPACE_GONE_SECONDS = 60


def _running(kube, kubelet, ns: str) -> None:
    """A FineTuneJob whose trainer pod runs (the state where a finalizer used to matter most)."""
    kube.create(FTJ, ns, finetunejob(ns))
    kube.wait_for(JOBS, ns, "sentiment-train", exists)
    kubelet.start_job(ns, "sentiment-train")
    wait_phase(kube, ns, "sentiment", "Running")


def test_objects_created_while_the_operator_runs_carry_no_finalizer(control_plane, operator, kube, kubelet, ns):
    since = control_plane.audit.offset()
    _running(kube, kubelet, ns)
    kube.create(MSV, ns, modelserve(ns))
    wait_phase(kube, ns, "chat", "WaitingForAdapters", res=MSV)
    assert not kube.get(FTJ, ns, "sentiment")["metadata"].get("finalizers")
    assert not kube.get(MSV, ns, "chat")["metadata"].get("finalizers")
    assert operator_requests(control_plane, since, "delete", "jobs") == []


def test_deleting_a_finetunejob_while_the_operator_is_stopped_completes(operator, kube, kubelet, ns):
    _running(kube, kubelet, ns)
    operator.stop()
    delete(kube, FTJ, ns, "sentiment")
    kube.wait_for(FTJ, ns, "sentiment", gone, 30, what="to be deleted with no operator running")
    for res, name in CHILDREN:  # the real garbage collector follows the owner references
        kube.wait_for(res, ns, name, gone, 30, what="to be garbage-collected")
    wait_until(lambda: kube.list(PODS, ns, JOB_PODS) == [], "for the trainer pod to be deleted")


def test_the_finalizer_of_an_older_operator_is_removed_when_the_operator_starts(
    control_plane, operator_settings, kube, ns
):
    """Migration: a FineTuneJob finalized by an older operator is released and then handled as usual."""
    body = finetunejob(ns)
    body["metadata"]["finalizers"] = [OLD_FINALIZER]
    kube.create(FTJ, ns, body)
    control = RealOperatorControl(control_plane, operator_settings)
    control.start()
    try:
        wait_until(lambda: not kube.get(FTJ, ns, "sentiment")["metadata"].get("finalizers"), "for the migration")
        kube.wait_for(JOBS, ns, "sentiment-train", exists)
    finally:
        control.stop()
    assert control.refused() == []
    delete(kube, FTJ, ns, "sentiment")
    kube.wait_for(FTJ, ns, "sentiment", gone, 30, what="to be deleted with no operator running")


def test_deleting_the_namespace_while_the_operator_is_stopped_completes(operator, control_plane, kube, kubelet, ns):
    _running(kube, kubelet, ns)
    kube.create(MSV, ns, modelserve(ns))
    wait_phase(kube, ns, "chat", "WaitingForAdapters", res=MSV)
    operator.stop()
    control_plane.delete_namespace(ns)  # the fake kubelet stops the trainer pod the namespace controller deletes
    kube.wait_for(NAMESPACES, None, ns, gone, NAMESPACE_GONE_SECONDS, what="to be deleted (namespace controller)")
