"""FineTuneJob decisions: from the spec, the current status and the observed trainer Job."""

from __future__ import annotations

from typing import Any

from kubetune.api.base import GROUP_VERSION
from kubetune.api.finetunejob import FineTuneJobStatus, OutputStatus, TrainingMetrics
from kubetune.api.resources import FineTuneJob
from kubetune.api.runtime import TrainerExit, adapter_path

from ..manifests.meta import Owner
from ..manifests.storage import adapter_store_location, cache_claim, output_of_job, store_claim, store_of_job
from ..manifests.trainer import output_location, trainer_children, trainer_model_storage
from ..settings import OperatorSettings
from . import queueing
from .conditions import get_condition, is_true, raw_condition, set_condition
from .plan import Event, Plan
from .report import TrainerReport, parse_termination_message
from .trainer_report import ReportedProgress

TERMINAL = ("Succeeded", "Failed")
# Status fields the operator owns: the operator is the only writer of the status (the trainer reports to its own
# ConfigMap, copied in after validation). Sent as null when unset, except `progress` and `metrics` (never sent as
# null: they only ever grow from what the trainer reported or its termination message said).
NEVER_NULL = ("progress", "metrics")
OWNED_FIELDS = (
    "phase",
    "progress",
    "conditions",
    "observedGeneration",
    "output",
    "metrics",
    "jobName",
    "startTime",
    "completionTime",
    "message",
)


def owner_of(ftj: FineTuneJob) -> Owner:
    meta = ftj.metadata
    return Owner(GROUP_VERSION, "FineTuneJob", meta.name, meta.namespace or "default", meta.uid or "")


def job_phase(job: dict[str, Any] | None) -> str | None:
    """The trainer Job's state in FineTuneJob terms (None when there is no Job)."""
    if job is None:
        return None
    if is_true(job, "Complete") or (is_true(job, "SuccessCriteriaMet") and not is_true(job, "FailureTarget")):
        return "Succeeded"
    if is_true(job, "Failed") or is_true(job, "FailureTarget"):
        return "Failed"
    if is_true(job, "Suspended") or (job.get("spec") or {}).get("suspend"):
        return "Suspended"
    status = job.get("status") or {}
    # `active` also counts pods still Pending (unscheduled, waiting for a GPU, pulling the image); `ready`
    # (set by every Job controller since Kubernetes 1.24) counts pods whose trainer runs. `active` only
    # stands in on servers that do not report `ready`.
    running = status["ready"] if status.get("ready") is not None else status.get("active")
    if (running or 0) > 0:
        return "Running"
    return "Pending"


# Container waiting reasons that keep a pod from ever running until someone acts (the kubelet's names).
STUCK_WAITING = (
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
)
# Events that explain why a Job has no running pod: on the Job (its controller could not create the pod) or on
# the pod (the kubelet could not mount a volume).
BLOCKING_EVENTS = ("FailedCreate", "FailedMount", "FailedAttachVolume", "FailedScheduling")


def pod_cause(pod: dict[str, Any]) -> tuple[str, str] | None:
    """(reason, message) keeping one trainer pod from running, as the scheduler or the kubelet wrote it."""
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            reason = condition.get("reason") or "Unschedulable"
            return reason, condition.get("message") or "the pod cannot be scheduled"
    for container in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_WAITING:
            name = container.get("name") or "container"
            return waiting["reason"], f"container {name}: {waiting.get('message') or waiting['reason']}"
    return None


def preemption(pods: list[dict[str, Any]]) -> tuple[str, str] | None:
    """("Preempted", what the trainer said) when the newest finished trainer pod stopped on SIGTERM after saving a
    checkpoint (exit PREEMPTED): the Job starts another pod, which resumes there."""
    finished = [pod for pod in pods if (pod.get("status") or {}).get("phase") == "Failed"]
    if not finished:
        return None
    newest = max(finished, key=lambda pod: (pod.get("metadata") or {}).get("creationTimestamp") or "")
    for container in (newest.get("status") or {}).get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated") or {}
        if terminated.get("exitCode") == TrainerExit.PREEMPTED:
            said = parse_termination_message(terminated.get("message"), TrainerExit.PREEMPTED).message
            name = (newest.get("metadata") or {}).get("name", "the trainer pod")
            return "Preempted", f"{name} was stopped (SIGTERM): {said or 'checkpoint saved'}; a new pod resumes from it"
    return None


def pending_cause(
    job: dict[str, Any] | None, pods: list[dict[str, Any]], events: list[dict[str, Any]]
) -> tuple[str, str] | None:
    """Why the trainer Job has no running pod: a pod's scheduling or container state first, else the newest
    blocking Event on the Job or one of its pods (FailedCreate: e.g. a quota or PodSecurity refused the pod;
    FailedMount). None when nothing is known to be wrong (the pod is simply starting)."""
    if job is None or job_phase(job) != "Pending":
        return None
    live = [pod for pod in pods if (pod.get("status") or {}).get("phase") in (None, "Pending")]
    for pod in sorted(live, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "", reverse=True):
        cause = pod_cause(pod)
        if cause is not None:
            return cause
    preempted = preemption(pods)
    if preempted is not None:
        return preempted
    uids = {(job.get("metadata") or {}).get("uid")} | {(pod.get("metadata") or {}).get("uid") for pod in live}
    blocking = [
        event
        for event in events
        if event.get("reason") in BLOCKING_EVENTS and (event.get("involvedObject") or {}).get("uid") in uids - {None}
    ]
    if not blocking:
        return None
    newest = max(blocking, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    return newest["reason"], newest.get("message") or newest["reason"]


def needs_report(status: FineTuneJobStatus, job: dict[str, Any] | None) -> bool:
    """Read the trainer's termination message only when the Job just finished and something is missing."""
    phase = job_phase(job)
    if status.phase in TERMINAL or phase not in TERMINAL:
        return False
    return phase == "Failed" or status.metrics is None


def status_patch(status: FineTuneJobStatus) -> dict[str, Any]:
    """The owned fields as a merge patch; unset fields are sent as null so stale values are cleared."""
    wire = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    patch = {name: wire.get(name) for name in OWNED_FIELDS}
    for name in NEVER_NULL:
        if patch[name] is None:
            del patch[name]
    return patch


def _finish(plan: Plan, current: FineTuneJobStatus, nxt: FineTuneJobStatus) -> Plan:
    plan.status = status_patch(nxt)
    plan.phase = nxt.phase
    if status_patch(current) == plan.status:
        plan.status = {}
    return plan


def plan_invalid(
    ftj_status: FineTuneJobStatus, message: str, generation: int | None, now: str, reason: str = "InvalidSpec"
) -> Plan:
    """An object that slipped past the CRD (or that its FineTuneRuntime refuses: `reason` PolicyViolation or
    RuntimeNotFound): Failed, no children, no retries."""
    plan = Plan()
    if ftj_status.phase in TERMINAL:
        plan.phase = ftj_status.phase
        return plan
    nxt = ftj_status.model_copy(deep=True)
    nxt.phase, nxt.message, nxt.observed_generation = "Failed", message, generation
    nxt.conditions = set_condition(nxt.conditions, "Validated", "False", reason, message, generation, now)
    conds = set_condition(nxt.conditions, "Failed", "True", reason, message, generation, now)
    nxt.conditions = set_condition(conds, "Succeeded", "False", reason, message, generation, now)
    plan.events.append(Event("Warning", reason, message))
    return _finish(plan, ftj_status, nxt)


def _output_status(ftj: FineTuneJob, job: dict[str, Any] | None, settings: OperatorSettings) -> OutputStatus:
    """Where servers take the adapter from: the adapter store copy when the trainer Job published one, else the
    adapter under the output folder it was given (what the Job says wins over what would be rendered today)."""
    spec, name, uid = ftj.spec, ftj.metadata.name, ftj.metadata.uid or ""
    store = store_of_job(job) if job is not None else adapter_store_location(name, uid, settings)
    output = output_of_job(job) or output_location(name, spec, uid)
    return OutputStatus(
        pvc=store or adapter_path(output),
        base_model=spec.base_model,
        method=spec.method,
        hub_repo=spec.output.hub.repo if spec.output.hub is not None else None,
    )


def _failure(job: dict[str, Any], report: TrainerReport | None) -> tuple[str, str]:
    """(reason, message) of a failed Job: the Job controller's reason plus what the trainer said."""
    condition = raw_condition(job, "Failed") or raw_condition(job, "FailureTarget") or {}
    reason = condition.get("reason") or "JobFailed"
    parts = [condition.get("message") or f"the trainer Job failed ({reason})"]
    if report is not None:
        said = ": ".join(part for part in (report.exit_reason, report.message) if part)
        if said:
            parts.append(f"trainer: {said}")
    return reason, "; ".join(parts)


def _pending(
    plan: Plan, nxt: FineTuneJobStatus, cause: tuple[str, str] | None, generation: int | None, now: str
) -> None:
    """Pending until a trainer pod really runs, with the reason it does not (Unschedulable, ImagePullBackOff,
    FailedCreate, ...) as condition `Running=False` and message; a new cause is also posted as a Warning."""
    reason, message = cause or ("PodStarting", "waiting for the trainer pod to start")
    if cause is not None:
        message = f"{reason}: {message}"
        if nxt.message != message:
            plan.events.append(Event("Warning", reason, message))
    nxt.phase, nxt.message = "Pending", message
    nxt.conditions = set_condition(nxt.conditions, "Running", "False", reason, message, generation, now)


def _early_stop_words(metrics: TrainingMetrics | None) -> str:
    """What the Succeeded message adds when training.earlyStopping ended the run: which step won and why."""
    if metrics is None or metrics.stop_reason != "EarlyStopped":
        return ""
    return f"; stopped early, published step {metrics.published_step}: {metrics.stop_message}"


def _copy_reported(nxt: FineTuneJobStatus, reported: ReportedProgress | None) -> None:
    """The trainer's validated progress, and its final metrics unless the operator has them already."""
    if reported is None:
        return
    if reported.progress is not None:
        nxt.progress = reported.progress
    if nxt.metrics is None and reported.metrics is not None:
        nxt.metrics = reported.metrics


ADMITTED = "Admitted"
"""Condition of a queued FineTuneJob: True while Kueue has admitted its Job; False with reason Queued or Preempted."""


def _queued(nxt: FineTuneJobStatus, conds: list, spec: Any, generation: int | None, now: str) -> list:
    """Kueue keeps the Job suspended: still waiting for quota (Queued), or suspended again after it was admitted
    (Preempted: the trainer resumes from its newest checkpoint when Kueue admits the Job again)."""
    before = get_condition(conds, ADMITTED)
    preempted = before is not None and (before.status == "True" or before.reason == "Preempted")
    if preempted:
        reason = "Preempted"
        message = (
            f"Kueue suspended the trainer Job again (preempted or evicted); it waits in queue {spec.queue_name} "
            "and resumes from its newest checkpoint when admitted"
        )
    else:
        reason, message = "Queued", f"waiting for Kueue to admit the trainer Job (queue {spec.queue_name})"
    nxt.phase, nxt.message = "Queued", message
    conds = set_condition(conds, ADMITTED, "False", reason, message, generation, now)
    return set_condition(conds, "Running", "False", reason, message, generation, now)


def _admitted(conds: list, spec: Any, generation: int | None, now: str) -> list:
    """A queued Job that runs (or starts pods) was admitted by Kueue."""
    if not spec.queue_name:
        return conds
    message = f"Kueue admitted the trainer Job (queue {spec.queue_name})"
    return set_condition(conds, ADMITTED, "True", "Admitted", message, generation, now)


def plan_finetunejob(
    ftj: FineTuneJob,
    job: dict[str, Any] | None,
    report: TrainerReport | None,
    settings: OperatorSettings,
    now: str,
    pending: tuple[str, str] | None = None,
    reported: ReportedProgress | None = None,
) -> Plan:
    """Next step for a valid FineTuneJob. A finished one is never touched again. `pending` is why its Job has
    no running pod (`pending_cause`), shown until a pod really runs."""
    current = ftj.status or FineTuneJobStatus()
    plan = Plan(phase=current.phase)
    if current.phase in TERMINAL:
        return plan
    spec, generation = ftj.spec, ftj.metadata.generation
    nxt = current.model_copy(deep=True)
    nxt.observed_generation = generation
    _copy_reported(nxt, reported)
    conds = set_condition(nxt.conditions, "Validated", "True", "SpecValid", "the spec is valid", generation, now)
    phase = job_phase(job)

    if job is None and current.job_name is not None and nxt.metrics is not None:
        # The trainer writes final metrics only after the adapter is saved: its Job finished and was removed
        # (TTL, GC) before the operator saw it. Finished work is never re-run.
        nxt.phase, nxt.output = "Succeeded", _output_status(ftj, None, settings)
        nxt.completion_time = nxt.completion_time or now
        nxt.message = "the trainer reported its final metrics; its Job was removed before the operator saw it end"
        conds = set_condition(conds, "Running", "False", "Completed", "the trainer finished", generation, now)
        conds = set_condition(conds, "Succeeded", "True", "TrainingSucceeded", nxt.message, generation, now)
        nxt.conditions = conds
        plan.events.append(Event("Normal", "Succeeded", nxt.message))
        return _finish(plan, current, nxt)

    if job is None:
        owner = owner_of(ftj)
        plan.create = trainer_children(owner, spec, settings)
        cache = cache_claim(owner.namespace, trainer_model_storage(spec, settings), settings)
        plan.shared = [claim for claim in (cache, store_claim(owner.namespace, settings)) if claim is not None]
        recreated = current.job_name is not None
        reason = "JobRecreated" if recreated else "JobCreated"
        message = (
            "the trainer Job disappeared while the FineTuneJob was not finished; recreated it "
            "(the trainer resumes from its newest checkpoint)"
            if recreated
            else "created the trainer Job and its ConfigMap, volume claim and service account"
        )
        nxt.job_name = plan.create[-1]["metadata"]["name"]
        nxt.phase = "Suspended" if spec.suspend else ("Queued" if spec.queue_name else "Pending")
        nxt.message = message
        conds = set_condition(conds, "JobCreated", "True", reason, message, generation, now)
        plan.events.append(Event("Normal", reason, f"{message}: Job {nxt.job_name}"))
        if spec.queue_name and not spec.suspend:
            conds = _queued(nxt, conds, spec, generation, now)
        nxt.conditions = conds
        return _finish(plan, current, nxt)

    nxt.job_name = job["metadata"]["name"]
    if not any(c.type == "JobCreated" and c.status == "True" for c in conds):
        conds = set_condition(conds, "JobCreated", "True", "JobCreated", f"trainer Job {nxt.job_name}", generation, now)
    job_status = job.get("status") or {}
    if phase not in TERMINAL:
        step = queueing.suspend_step(job, spec)
        if step.job_patch is not None:
            plan.patches.append((job, step.job_patch))

    if phase == "Succeeded":
        nxt.phase = "Succeeded"
        nxt.output = _output_status(ftj, job, settings)
        if nxt.metrics is None and report is not None and report.metrics is not None:
            nxt.metrics = report.metrics
        nxt.start_time = nxt.start_time or job_status.get("startTime") or now
        nxt.completion_time = job_status.get("completionTime") or now
        assert nxt.output.pvc is not None
        nxt.message = f"adapter written to {nxt.output.pvc.claim_name}/{nxt.output.pvc.path}"
        nxt.message += _early_stop_words(nxt.metrics)
        conds = set_condition(conds, "Running", "False", "Completed", "the trainer finished", generation, now)
        conds = set_condition(conds, "Succeeded", "True", "TrainingSucceeded", nxt.message, generation, now)
    elif phase == "Failed":
        reason, message = _failure(job, report)
        nxt.phase, nxt.message = "Failed", message
        nxt.completion_time = now
        conds = set_condition(conds, "Running", "False", reason, message, generation, now)
        conds = set_condition(conds, "Failed", "True", reason, message, generation, now)
        conds = set_condition(conds, "Succeeded", "False", reason, message, generation, now)
    elif spec.suspend:
        nxt.phase, nxt.message = "Suspended", "suspended: the trainer pods are stopped, checkpoints are kept"
        conds = set_condition(conds, "Running", "False", "Suspended", nxt.message, generation, now)
        conds = set_condition(conds, "Suspended", "True", "Suspended", nxt.message, generation, now)
        if spec.queue_name:
            message = "suspended by the FineTuneJob: its Kueue Workload is deactivated until it is resumed"
            conds = set_condition(conds, ADMITTED, "False", "Suspended", message, generation, now)
    else:
        if any(c.type == "Suspended" for c in conds):
            conds = set_condition(conds, "Suspended", "False", "Resumed", "resumed", generation, now)
        if queueing.waiting_for_admission(job, spec):
            conds = _queued(nxt, conds, spec, generation, now)
        elif phase == "Running":
            nxt.phase, nxt.message = "Running", "the trainer is running"
            nxt.start_time = nxt.start_time or job_status.get("startTime") or now
            conds = set_condition(conds, "Running", "True", "TrainerRunning", nxt.message, generation, now)
            conds = _admitted(conds, spec, generation, now)
        else:
            conds = _admitted(conds, spec, generation, now)
            nxt.conditions = conds
            _pending(plan, nxt, pending, generation, now)
            conds = nxt.conditions
    nxt.conditions = conds
    if nxt.phase != current.phase:
        kind = "Warning" if nxt.phase == "Failed" else "Normal"
        reason = {"Running": "Started", "Succeeded": "Succeeded", "Failed": "Failed", "Suspended": "Suspended"}
        event_reason = "Resumed" if current.phase == "Suspended" else reason.get(nxt.phase, nxt.phase)
        if nxt.phase == "Queued":
            admitted = get_condition(nxt.conditions, ADMITTED)
            event_reason = admitted.reason if admitted is not None else "Queued"
        plan.events.append(Event(kind, event_reason, nxt.message or nxt.phase))
    return _finish(plan, current, nxt)
