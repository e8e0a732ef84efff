"""FineTuneJob recovery: operator restarts, lost Jobs, finished jobs that must never run again, deletion."""

from __future__ import annotations

import json

from kubetune.api.resources import FineTuneJob
from kubetune.operator.manifests.meta import Owner
from kubetune.operator.manifests.trainer import spec_configmap, trainer_rbac

from tests.support.kube.server import CONFIGMAPS, EVENTS, FTJ, JOBS, PODS, PVCS, ROLEBINDINGS, ROLES, SERVICEACCOUNTS

from .helpers import NS, exists, finetunejob, gone, wait_call, wait_event, wait_phase

CHILDREN = [
    (CONFIGMAPS, "sentiment-spec"),
    (PVCS, "sentiment-output"),
    (SERVICEACCOUNTS, "sentiment-trainer"),
    (ROLES, "sentiment-trainer"),
    (ROLEBINDINGS, "sentiment-trainer"),
    (JOBS, "sentiment-train"),
]
LABEL = "kubetune.dev/finetunejob=sentiment"


def _uids(kube):
    return {res[1]: kube.get(res, NS, name)["metadata"]["uid"] for res, name in CHILDREN}


def _assert_one_of_each(kube):
    for res, _ in CHILDREN:
        assert len(kube.list(res, NS, LABEL)) == 1, res


def _reasons(kube):
    return [e["reason"] for e in kube.list(EVENTS, NS) if e["involvedObject"]["name"] == "sentiment"]


def test_operator_restart_at_every_stage(operator, kube, kubelet, cluster):
    # Stage 0: the operator died half-way through creating children (no Job, no status yet).
    operator.stop()
    created = kube.create(FTJ, NS, finetunejob())
    owner = Owner.of(created)
    spec = FineTuneJob.model_validate(created).spec
    kube.create(CONFIGMAPS, NS, spec_configmap(owner, spec))
    kube.create(SERVICEACCOUNTS, NS, trainer_rbac(owner)[0])
    operator.start()
    wait_phase(kube, "sentiment", "Pending")
    kube.wait_for(JOBS, NS, "sentiment-train", exists)
    _assert_one_of_each(kube)
    uids = _uids(kube)

    # Stage 1: Job created, not started.
    operator.restart()
    assert wait_phase(kube, "sentiment", "Pending")["status"]["jobName"] == "sentiment-train"

    # Stage 2: the trainer starts while the operator is down.
    operator.stop()
    kubelet.start_job(NS, "sentiment-train")
    operator.start()
    running = wait_phase(kube, "sentiment", "Running")

    # Stage 3: the trainer reports progress, then finishes while the operator is down.
    kube.patch(FTJ, NS, "sentiment", {"status": {"progress": {"step": 2, "totalSteps": 4, "percent": 50}}}, "status")
    operator.restart()
    assert wait_phase(kube, "sentiment", "Running")["status"]["progress"]["percent"] == 50
    operator.stop()
    kubelet.finish_job(NS, "sentiment-train", 0, json.dumps({"metrics": {"trainLoss": 0.25}}))
    operator.start()
    done = wait_phase(kube, "sentiment", "Succeeded")
    assert done["status"]["metrics"] == {"trainLoss": 0.25}
    assert done["status"]["startTime"] == running["status"]["startTime"]

    # Stage 4: finished; a restart changes nothing.
    before = kube.get(FTJ, NS, "sentiment")
    since = len(cluster.recorder.of())
    operator.restart()
    wait_call(cluster, since, "get", "finetunejobs")  # the resume handler ran
    operator.stop()
    after = kube.get(FTJ, NS, "sentiment")
    assert after["status"] == before["status"]
    assert _uids(kube) == uids
    _assert_one_of_each(kube)
    assert _reasons(kube) == ["JobCreated", "Started", "Succeeded"]
    assert len(kubelet.pods_of(NS, "sentiment-train")) == 1


def test_job_deleted_while_running_is_recreated(operator, kube, kubelet):
    kube.create(FTJ, NS, finetunejob())
    first = kube.wait_for(JOBS, NS, "sentiment-train", exists)
    kubelet.start_job(NS, "sentiment-train")
    wait_phase(kube, "sentiment", "Running")
    kube.delete(JOBS, NS, "sentiment-train")
    second = kube.wait_for(
        JOBS,
        NS,
        "sentiment-train",
        lambda job: job is not None and job["metadata"]["uid"] != first["metadata"]["uid"],
        what="to be recreated",
    )
    assert second["spec"]["template"] == first["spec"]["template"]
    wait_event(kube, "sentiment", "JobRecreated")
    kubelet.start_job(NS, "sentiment-train")
    kubelet.finish_job(NS, "sentiment-train", 0, "{}")
    wait_phase(kube, "sentiment", "Succeeded")


def test_job_deleted_after_success_never_runs_again(operator, kube, kubelet, cluster):
    kube.create(FTJ, NS, finetunejob(ttlSecondsAfterFinished=0))
    job = kube.wait_for(JOBS, NS, "sentiment-train", exists)
    assert job["spec"]["ttlSecondsAfterFinished"] == 0
    kubelet.start_job(NS, "sentiment-train")
    kubelet.finish_job(NS, "sentiment-train", 0, "{}")
    succeeded = wait_phase(kube, "sentiment", "Succeeded")
    kube.delete(JOBS, NS, "sentiment-train")  # the TTL controller's work
    kube.wait_for(PODS, NS, "sentiment-train-0", gone, what="to be garbage-collected with its Job")
    since = len(cluster.recorder.of())
    operator.restart()
    wait_call(cluster, since, "get", "finetunejobs")  # the resume handler ran
    operator.stop()
    assert kube.find(JOBS, NS, "sentiment-train") is None
    assert kube.get(FTJ, NS, "sentiment")["status"] == succeeded["status"]
    job_creates = [c for c in cluster.recorder.of() if c.resource == "jobs" and c.verb == "create"]
    assert len(job_creates) == 1


def test_deleting_the_finetunejob_deletes_its_children(operator, kube, kubelet):
    kube.create(FTJ, NS, finetunejob())
    kube.wait_for(JOBS, NS, "sentiment-train", exists)
    kubelet.start_job(NS, "sentiment-train")
    wait_phase(kube, "sentiment", "Running")
    kube.delete(FTJ, NS, "sentiment")
    kube.wait_for(FTJ, NS, "sentiment", gone, what="to be deleted (finalizer released)")
    for res, name in CHILDREN:
        kube.wait_for(res, NS, name, gone, what="to be garbage-collected")
    assert kubelet.pods_of(NS, "sentiment-train") == []
