"""Who may write a trainer Job's `spec.suspend`, and what Kueue's writes mean for the FineTuneJob.

Without a queue the operator owns `spec.suspend` and keeps it equal to the FineTuneJob's. With a queue Kueue owns
it: it admits by unsuspending the Job and preempts by suspending it, and it unsuspends again any suspended Job
whose Workload is still admitted. So a FineTuneJob's own `suspend` is applied the way Kueue documents for stopping
a job: its Workload's `spec.active: false` (Kueue evicts it and does not requeue it), and `true` again on resume.
The operator records the value it applied in the Job's annotation `kubetune.dev/suspend` and writes only when the
FineTuneJob's value differs from it, so it never undoes an admission or a preemption.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubetune.api.finetunejob import FineTuneJobSpec

from ..manifests.kueue import ANNOTATION_SUSPEND, suspend_text

KUEUE_JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
"""The label Kueue puts on the Workload it creates for a Job (value: the Job's uid)."""


def _suspended(job: dict[str, Any]) -> bool:
    return bool((job.get("spec") or {}).get("suspend"))


def applied_suspend(job: dict[str, Any]) -> str | None:
    return ((job.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_SUSPEND)


@dataclass(frozen=True)
class SuspendStep:
    """What to write for the FineTuneJob's `suspend`: a merge patch of the Job (None: nothing) and the value the
    queued Job's Workloads' `spec.active` must get (None: leave them to Kueue)."""

    job_patch: dict[str, Any] | None = None
    workload_active: bool | None = None


def suspend_step(job: dict[str, Any], spec: FineTuneJobSpec) -> SuspendStep:
    """The writes that apply `spec.suspend` to a Job that has not finished."""
    if not spec.queue_name:
        if _suspended(job) != spec.suspend:
            return SuspendStep(job_patch={"spec": {"suspend": spec.suspend}})
        return SuspendStep()
    wanted = suspend_text(spec.suspend)
    if spec.suspend:
        # Level-triggered while suspended: a Workload Kueue created after the last pass is deactivated too (Kueue
        # never activates one by itself, so this cannot fight it).
        patch: dict[str, Any] | None = None
        if applied_suspend(job) != wanted or not _suspended(job):
            patch = {"metadata": {"annotations": {ANNOTATION_SUSPEND: wanted}}}
            if not _suspended(job):
                patch["spec"] = {"suspend": True}
        return SuspendStep(job_patch=patch, workload_active=False)
    if applied_suspend(job) == "true":
        # Resumed: activate the Workload again and leave spec.suspend to Kueue (it unsuspends on admission).
        return SuspendStep(job_patch={"metadata": {"annotations": {ANNOTATION_SUSPEND: wanted}}}, workload_active=True)
    return SuspendStep()


def workload_patches(workloads: list[dict[str, Any]], active: bool | None) -> list[tuple[dict[str, Any], dict]]:
    """(Workload, merge patch) for each Workload whose `spec.active` is not `active` (Kueue defaults it to true)."""
    if active is None:
        return []
    return [
        (workload, {"spec": {"active": active}})
        for workload in workloads
        if (workload.get("spec") or {}).get("active", True) is not active
    ]


def waiting_for_admission(job: dict[str, Any], spec: FineTuneJobSpec) -> bool:
    """A queued Job that Kueue keeps suspended while its FineTuneJob wants it to run."""
    return bool(spec.queue_name) and not spec.suspend and _suspended(job)
