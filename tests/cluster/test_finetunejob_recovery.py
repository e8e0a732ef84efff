"""FineTuneJob recovery on the real control plane: operator restarts at every stage, lost Jobs, finished Jobs removed
(by hand or by the real ttl-after-finished controller) that must never run again, deletion of the FineTuneJob and
of its whole namespace. "Never re-run" is read from the API server's audit log: no `create jobs` by the operator."""

from __future__ import annotations

import json

import pytest
from kubetune.api.resources import FineTuneJob
from kubetune.operator.manifests.meta import Owner
from kubetune.operator.manifests.trainer import spec_configmap, trainer_rbac

from tests.support.envtest.fixtures import NAMESPACES, RealOperatorControl
from tests.support.kube.server import CONFIGMAPS, FTJ, JOBS, PODS, SERVICEACCOUNTS

from .helpers import (
    SENTIMENT_CHILDREN,
    delete,
    event_reasons,
    exists,
    finetunejob,
    gone,
    operator_requests,
    wait_event,
    wait_phase,
    wait_request,
    wait_until,
)

CHILDREN = SENTIMENT_CHILDREN
LABEL = "kubetune.dev/finetunejob=sentiment"
JOB_PODS = "batch.kubernetes.io/job-name=sentiment-train"
NAMESPACE_GONE_SECONDS = 60


def _uids(kube, ns: str) -> dict[str, str]:
    return {f"{res[1]}/{name}": kube.get(res, ns, name)["metadata"]["uid"] for res, name in CHILDREN}


def _assert_one_of_each(kube, ns: str) -> None:
    for res in {res for res, _ in CHILDREN}:
        wanted = sorted(name for kind, name in CHILDREN if kind == res)
        assert sorted(item["metadata"]["name"] for item in kube.list(res, ns, LABEL)) == wanted, res


def _restart_and_wait_for_resume(operator, control_plane, ns: str) -> int:
    """Restart the operator and wait until its resume handler re-read the FineTuneJob; returns the audit offset
    from before the restart, so the caller can look at everything the restarted operator sent."""
    since = control_plane.audit.offset()
    operator.restart()
    wait_request(control_plane, since, "get", "finetunejobs")
    return since


def test_operator_restart_at_every_stage(operator, control_plane, kube, kubelet, ns):
    # Stage 0: the operator died half-way through creating children (no Job, no status yet).
    operator.stop()
    created = kube.create(FTJ, ns, finetunejob(ns))
    owner = Owner.of(created)
    spec = FineTuneJob.model_validate(created).spec
    kube.create(CONFIGMAPS, ns, spec_configmap(owner, spec))
    kube.create(SERVICEACCOUNTS, ns, trainer_rbac(owner)[0])
    operator.start()
    wait_phase(kube, ns, "sentiment", "Pending")
    kube.wait_for(JOBS, ns, "sentiment-train", exists)
    _assert_one_of_each(kube, ns)
    uids = _uids(kube, ns)

    # Stage 1: Job created, its pod not started (the Job controller counts it active, it is not ready).
    kube.wait_for(JOBS, ns, "sentiment-train", lambda job: (job.get("status") or {}).get("active") == 1)
    _restart_and_wait_for_resume(operator, control_plane, ns)
    assert wait_phase(kube, ns, "sentiment", "Pending")["status"]["jobName"] == "sentiment-train"

    # Stage 2: the trainer starts while the operator is down.
    operator.stop()
    kubelet.start_job(ns, "sentiment-train")
    operator.start()
    running = wait_phase(kube, ns, "sentiment", "Running")

    # Stage 3: the trainer reports progress, then finishes while the operator is down.
    progress = {"step": 2, "totalSteps": 4, "percent": 50}
    kube.patch(FTJ, ns, "sentiment", {"status": {"progress": progress}}, "status")
    _restart_and_wait_for_resume(operator, control_plane, ns)
    assert wait_phase(kube, ns, "sentiment", "Running")["status"]["progress"]["percent"] == 50
    operator.stop()
    kubelet.finish_job(ns, "sentiment-train", 0, json.dumps({"metrics": {"trainLoss": 0.25}}))
    operator.start()
    done = wait_phase(kube, ns, "sentiment", "Succeeded")
    assert done["status"]["metrics"] == {"trainLoss": 0.25}
    assert done["status"]["startTime"] == running["status"]["startTime"]

    # Stage 4: finished; a restart changes nothing.
    before = kube.get(FTJ, ns, "sentiment")
    since = _restart_and_wait_for_resume(operator, control_plane, ns)
    operator.stop()
    assert kube.get(FTJ, ns, "sentiment")["status"] == before["status"]
    assert operator_requests(control_plane, since, "patch", "finetunejobs", "status") == []
    assert operator_requests(control_plane, since, "create", "jobs") == []
    assert _uids(kube, ns) == uids
    _assert_one_of_each(kube, ns)
    assert event_reasons(kube, ns, "sentiment") == ["JobCreated", "Started", "Succeeded"]
    assert len(kubelet.pods_of(ns, "sentiment-train")) == 1


def test_job_deleted_while_running_is_recreated(operator, kube, kubelet, ns):
    kube.create(FTJ, ns, finetunejob(ns))
    first = kube.wait_for(JOBS, ns, "sentiment-train", exists)
    kubelet.start_job(ns, "sentiment-train")
    wait_phase(kube, ns, "sentiment", "Running")
    delete(kube, JOBS, ns, "sentiment-train")
    second = kube.wait_for(
        JOBS,
        ns,
        "sentiment-train",
        lambda job: job is not None and job["metadata"]["uid"] != first["metadata"]["uid"],
        what="to be recreated",
    )
    # The server labels each Job's pod template with its own controller-uid; the pod spec is the same.
    assert second["spec"]["template"]["spec"] == first["spec"]["template"]["spec"]
    wait_event(kube, ns, "sentiment", "JobRecreated")
    kubelet.start_job(ns, "sentiment-train")
    kubelet.finish_job(ns, "sentiment-train", 0, "{}")
    wait_phase(kube, ns, "sentiment", "Succeeded")


def test_job_deleted_after_success_never_runs_again(operator, control_plane, kube, kubelet, ns):
    since_start = control_plane.audit.offset()
    kube.create(FTJ, ns, finetunejob(ns))
    kube.wait_for(JOBS, ns, "sentiment-train", exists)
    kubelet.start_job(ns, "sentiment-train")
    kubelet.finish_job(ns, "sentiment-train", 0, "{}")
    succeeded = wait_phase(kube, ns, "sentiment", "Succeeded")
    delete(kube, JOBS, ns, "sentiment-train")
    wait_until(lambda: kube.list(PODS, ns, JOB_PODS) == [], "for the garbage collector to delete the trainer pod")
    _restart_and_wait_for_resume(operator, control_plane, ns)
    operator.stop()
    assert kube.find(JOBS, ns, "sentiment-train") is None
    assert kube.get(FTJ, ns, "sentiment")["status"] == succeeded["status"]
    assert len(operator_requests(control_plane, since_start, "create", "jobs")) == 1


def test_job_removed_by_the_ttl_controller_leaves_the_finetunejob_succeeded(operator, control_plane, kube, kubelet, ns):
    since_start = control_plane.audit.offset()
    kube.create(FTJ, ns, finetunejob(ns, ttlSecondsAfterFinished=1))
    job = kube.wait_for(JOBS, ns, "sentiment-train", exists)
    assert job["spec"]["ttlSecondsAfterFinished"] == 1
    kubelet.start_job(ns, "sentiment-train")
    kubelet.finish_job(ns, "sentiment-train", 0, json.dumps({"metrics": {"trainLoss": 0.5}}))
    succeeded = wait_phase(kube, ns, "sentiment", "Succeeded")
    # The real ttl-after-finished controller deletes the Job a second after it completed; GC takes its pod.
    kube.wait_for(JOBS, ns, "sentiment-train", gone, what="to be removed by the ttl-after-finished controller")
    wait_until(lambda: kube.list(PODS, ns, JOB_PODS) == [], "for the garbage collector to delete the trainer pod")
    assert kube.get(FTJ, ns, "sentiment")["status"] == succeeded["status"]

    _restart_and_wait_for_resume(operator, control_plane, ns)
    operator.stop()
    assert kube.find(JOBS, ns, "sentiment-train") is None
    assert kube.get(FTJ, ns, "sentiment")["status"] == succeeded["status"]
    assert len(operator_requests(control_plane, since_start, "create", "jobs")) == 1
    assert event_reasons(kube, ns, "sentiment") == ["JobCreated", "Started", "Succeeded"]


# Where the final metrics are when the Job is gone: its report ConfigMap, where the trainer really writes them with
# its own token, or the status (an older trainer, or a status written before the operator stopped).
FINAL_METRICS_WRITES = {
    "report-configmap": (CONFIGMAPS, "sentiment-report", {"data": {"metrics": json.dumps({"trainLoss": 0.5})}}, None),
    "status": (FTJ, "sentiment", {"status": {"metrics": {"trainLoss": 0.5}}}, "status"),
}


@pytest.mark.parametrize("where", list(FINAL_METRICS_WRITES))
def test_job_finished_and_removed_while_the_operator_was_down(where, operator, control_plane, kube, kubelet, ns):
    """The trainer wrote its final metrics, then its Job ended and the TTL controller removed it before the
    operator came back: the operator reads them even though the Job is gone, and the FineTuneJob is Succeeded,
    not trained again."""
    since_start = control_plane.audit.offset()
    kube.create(FTJ, ns, finetunejob(ns, ttlSecondsAfterFinished=1))
    kube.wait_for(JOBS, ns, "sentiment-train", exists)
    kubelet.start_job(ns, "sentiment-train")
    wait_phase(kube, ns, "sentiment", "Running")
    operator.stop()
    resource, name, write, subresource = FINAL_METRICS_WRITES[where]
    kube.patch(resource, ns, name, write, subresource)
    kubelet.finish_job(ns, "sentiment-train", 0, "{}")
    kube.wait_for(JOBS, ns, "sentiment-train", gone, what="to be removed by the ttl-after-finished controller")
    operator.start()
    wait_until(
        lambda: (
            kube.find(JOBS, ns, "sentiment-train") is not None
            or kube.get(FTJ, ns, "sentiment")["status"]["phase"] == "Succeeded"
        ),
        "for the FineTuneJob to succeed (or its Job to be created again)",
    )
    done = kube.get(FTJ, ns, "sentiment")
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["metrics"] == {"trainLoss": 0.5}
    assert done["status"]["output"]["pvc"]["claimName"] == "sentiment-output"
    assert kube.find(JOBS, ns, "sentiment-train") is None
    assert len(operator_requests(control_plane, since_start, "create", "jobs")) == 1


def test_a_failed_job_being_deleted_still_fails_the_finetunejob(operator, control_plane, kube, kubelet, ns):
    """A Job that failed and is being deleted (foreground, as the ttl-after-finished controller deletes; held here by
    another controller's finalizer) while the operator was down still says how the run ended: the FineTuneJob is
    Failed, not blocked waiting for the Job to go (and, once it went, never trained again)."""
    since_start = control_plane.audit.offset()
    kube.create(FTJ, ns, finetunejob(ns, backoffLimit=0))
    kube.wait_for(JOBS, ns, "sentiment-train", exists)
    kubelet.start_job(ns, "sentiment-train")
    wait_phase(kube, ns, "sentiment", "Running")
    operator.stop()
    kube.patch(JOBS, ns, "sentiment-train", {"metadata": {"finalizers": ["example.com/hold"]}})
    kubelet.finish_job(ns, "sentiment-train", 1, json.dumps({"exitReason": "TrainerError", "message": "boom"}))
    delete(kube, JOBS, ns, "sentiment-train", "Foreground")
    kube.wait_for(JOBS, ns, "sentiment-train", lambda job: job and job["metadata"].get("deletionTimestamp"))
    operator.start()
    failed = wait_phase(kube, ns, "sentiment", "Failed")
    assert "backoff limit" in failed["status"]["message"]  # the Job controller's reason (its pod is gone)
    kube.patch(JOBS, ns, "sentiment-train", {"metadata": {"finalizers": []}})
    kube.wait_for(JOBS, ns, "sentiment-train", gone)
    _restart_and_wait_for_resume(operator, control_plane, ns)
    assert kube.get(FTJ, ns, "sentiment")["status"]["phase"] == "Failed"
    assert len(operator_requests(control_plane, since_start, "create", "jobs")) == 1


def test_deleting_the_finetunejob_deletes_its_children(operator, kube, kubelet, ns):
    kube.create(FTJ, ns, finetunejob(ns))
    kube.wait_for(JOBS, ns, "sentiment-train", exists)
    kubelet.start_job(ns, "sentiment-train")
    wait_phase(kube, ns, "sentiment", "Running")
    kube.delete(FTJ, ns, "sentiment")
    kube.wait_for(FTJ, ns, "sentiment", gone, 30, what="to be deleted")
    for res, name in CHILDREN:  # the real garbage collector follows the owner references
        kube.wait_for(res, ns, name, gone, 30, what="to be garbage-collected")
    wait_until(lambda: kube.list(PODS, ns, JOB_PODS) == [], "for the trainer pod to be deleted")


def test_deleting_the_namespace_with_a_running_finetunejob_completes(
    control_plane, operator_settings, kube, kubelet, ns
):
    """Namespace deletion with the operator running completes (no finalizer; the operator keeps out of the way)."""
    control = RealOperatorControl(control_plane, operator_settings)
    control.start()
    try:
        kube.create(FTJ, ns, finetunejob(ns))
        kube.wait_for(JOBS, ns, "sentiment-train", exists)
        assert not kube.get(FTJ, ns, "sentiment")["metadata"].get("finalizers")
        kubelet.start_job(ns, "sentiment-train")
        wait_phase(kube, ns, "sentiment", "Running")
        control_plane.delete_namespace(ns)  # the fake kubelet stops the trainer pod the controller deletes
        kube.wait_for(NAMESPACES, None, ns, gone, NAMESPACE_GONE_SECONDS, what="to be deleted (namespace controller)")
    finally:
        control.stop()
    # A terminating namespace refuses new objects (NamespaceLifecycle admission, 403): an Event the operator posts
    # while the namespace controller deletes the trainer is refused that way; anything else refused is a failure.
    refused = [r for r in control.refused() if "because it is being terminated" not in r]
    assert refused == []
