"""Kueue: the trainer Job as Kueue expects it, and who writes its `spec.suspend` (reconcile/queueing.py)."""

from __future__ import annotations

from kubetune.api.resources import FineTuneJob
from kubetune.operator.manifests.kueue import ANNOTATION_SUSPEND
from kubetune.operator.manifests.trainer import trainer_job
from kubetune.operator.reconcile import finetunejob as ftj_logic
from kubetune.operator.reconcile import queueing
from kubetune.operator.reconcile.conditions import get_condition
from kubetune.operator.settings import OperatorSettings

from tests.cluster.helpers import finetunejob

SETTINGS = OperatorSettings(trainer_image="t:1", server_image="s:1")
NOW = "2026-01-01T00:00:00Z"
META = {"labels": {"team": "nlp"}, "annotations": {"cost": "42"}}


def _ftj(**spec) -> FineTuneJob:
    body = finetunejob("default", **spec)
    body["metadata"].update(uid="uid-1", generation=1)
    return FineTuneJob.model_validate(body)


def _job(ftj: FineTuneJob, suspend: bool, applied: str | None = None) -> dict:
    job = trainer_job(ftj_logic.owner_of(ftj), ftj.spec, SETTINGS)
    job["spec"]["suspend"] = suspend
    annotations = job["metadata"].setdefault("annotations", {})
    annotations.pop(ANNOTATION_SUSPEND, None)
    if applied is not None:
        annotations[ANNOTATION_SUSPEND] = applied
    job["metadata"]["uid"] = "job-uid"
    job["status"] = {}
    return job


def test_queued_job_is_created_suspended_with_queue_label_and_pass_through_metadata():
    ftj = _ftj(queueName="team-a", workloadMetadata=META)
    job = trainer_job(ftj_logic.owner_of(ftj), ftj.spec, SETTINGS)
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert job["metadata"]["annotations"] == {"cost": "42", ANNOTATION_SUSPEND: "false"}
    template = job["spec"]["template"]["metadata"]
    assert template["labels"]["team"] == "nlp" and template["annotations"] == {"cost": "42"}
    assert "kueue.x-k8s.io/queue-name" not in template["labels"]  # Kueue reads the queue from the Job only


def test_without_queue_the_job_is_unchanged_and_metadata_still_passes_through():
    plain = _ftj()
    job = trainer_job(ftj_logic.owner_of(plain), plain.spec, SETTINGS)
    assert job["spec"]["suspend"] is False and "annotations" not in job["metadata"]
    tagged = _ftj(workloadMetadata=META)
    job = trainer_job(ftj_logic.owner_of(tagged), tagged.spec, SETTINGS)
    assert job["spec"]["suspend"] is False and job["metadata"]["labels"]["team"] == "nlp"


def test_placement_does_not_change_the_training_fingerprint():
    assert _ftj(queueName="team-a", workloadMetadata=META).spec.fingerprint() == _ftj().spec.fingerprint()
    observed = _ftj(
        tracking={"tensorboard": False, "mlflow": {"secretName": "mlflow"}},
        modelCache={"claimName": "models"},
        terminationGracePeriodSeconds=600,
    )
    assert observed.spec.fingerprint() == _ftj().spec.fingerprint()
    assert _ftj(training={"learningRate": 1e-3}).spec.fingerprint() != _ftj().spec.fingerprint()


def test_without_queue_the_operator_owns_suspend():
    ftj = _ftj()
    assert queueing.suspend_step(_job(ftj, True), ftj.spec).job_patch == {"spec": {"suspend": False}}
    assert queueing.suspend_step(_job(ftj, False), ftj.spec) == queueing.SuspendStep()


def test_with_queue_kueue_owns_suspend():
    ftj = _ftj(queueName="team-a")
    # Kueue admitted (unsuspended) or preempted (suspended): the FineTuneJob's value was applied, nothing to write.
    for suspended in (True, False):
        assert queueing.suspend_step(_job(ftj, suspended, "false"), ftj.spec) == queueing.SuspendStep()


def test_suspending_a_queued_job_deactivates_its_workload_and_resuming_activates_it():
    suspended = _ftj(queueName="team-a", suspend=True)
    step = queueing.suspend_step(_job(suspended, False, "false"), suspended.spec)
    assert step.workload_active is False
    assert step.job_patch == {"metadata": {"annotations": {ANNOTATION_SUSPEND: "true"}}, "spec": {"suspend": True}}
    # Applied already: only the Workloads are kept inactive (one Kueue created later is deactivated too).
    assert queueing.suspend_step(_job(suspended, True, "true"), suspended.spec) == queueing.SuspendStep(None, False)
    resumed = _ftj(queueName="team-a")
    step = queueing.suspend_step(_job(resumed, True, "true"), resumed.spec)
    assert step.workload_active is True
    assert step.job_patch == {"metadata": {"annotations": {ANNOTATION_SUSPEND: "false"}}}


def test_workload_patches_only_where_active_differs():
    workloads = [{"spec": {}}, {"spec": {"active": False}}, {"spec": {"active": True}}]
    assert queueing.workload_patches(workloads, False) == [
        (workloads[0], {"spec": {"active": False}}),
        (workloads[2], {"spec": {"active": False}}),
    ]
    assert queueing.workload_patches(workloads, None) == []


def _plan(ftj: FineTuneJob, job: dict):
    return ftj_logic.plan_finetunejob(ftj, job, None, SETTINGS, NOW)


def test_phase_follows_kueue_queued_admitted_preempted():
    ftj = _ftj(queueName="team-a")
    created = _plan(ftj, None)
    assert created.phase == "Queued" and created.status["conditions"][-1]["reason"] == "Queued"
    status = ftj_logic.FineTuneJobStatus.model_validate(created.status)
    ftj = ftj.model_copy(update={"status": status})

    running = _job(ftj, False, "false")
    running["status"] = {"active": 1, "ready": 1, "startTime": NOW}
    plan = _plan(ftj, running)
    assert plan.phase == "Running" and plan.patches == []
    ftj = ftj.model_copy(update={"status": ftj_logic.FineTuneJobStatus.model_validate(plan.status)})
    assert get_condition(ftj.status.conditions, "Admitted").status == "True"

    plan = _plan(ftj, _job(ftj, True, "false"))  # Kueue suspended it again
    assert plan.phase == "Queued" and plan.patches == []
    admitted = get_condition(ftj_logic.FineTuneJobStatus.model_validate(plan.status).conditions, "Admitted")
    assert (admitted.status, admitted.reason) == ("False", "Preempted")
    assert [event.reason for event in plan.events] == ["Preempted"]
