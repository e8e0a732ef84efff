"""Reconcile services: read the object and its children, run the pure plan, apply it, write status.

One lock per object serialises reconciles triggered by different watch streams (the custom resource,
its Job or Deployment), so each works from what the previous one wrote.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import kopf
from pydantic import ValidationError

from kubetune.api.errors import format_validation_error
from kubetune.api.finetunejob import FineTuneJobStatus
from kubetune.api.modelserve import ModelServeStatus
from kubetune.api.resources import FineTuneJob, ModelServe
from kubetune.api.runtime_policy import FineTuneRuntimeSpec

from . import kube as k8s
from . import naming, policy
from .cache import ChildReader
from .kube import Kube, KubeApiError
from .manifests.meta import Owner
from .manifests.server import server_model_storage
from .manifests.trainer import trainer_children
from .metrics import OperatorMetrics
from .reconcile import drift, queueing
from .reconcile import finetunejob as ftj_logic
from .reconcile import modelserve as msv_logic
from .reconcile.conditions import get_condition, set_condition
from .reconcile.plan import Plan
from .reconcile.report import report_from_pods
from .reconcile.trainer_report import parse_report
from .server_adapters import ask_all, server_pods
from .settings import OperatorSettings

log = logging.getLogger(__name__)
UNKNOWN: Any = object()
FORGOTTEN = "Forgotten"  # the owner is being deleted: the Job's own deletion needs no reconcile
# A create the API server refuses for good (bad request, forbidden by quota/RBAC/admission, invalid): retrying
# at once changes nothing, so retries back off from RETRY_MIN to RETRY_MAX seconds.
REFUSED = (400, 403, 422)
RETRY_MIN, RETRY_MAX = 5.0, 300.0
WAIT_SECONDS = 2.0  # a predecessor's or terminating child usually goes within seconds (garbage collector)
RECHECK_MIN, RECHECK_MAX = 5.0, 60.0  # asking servers again whether they loaded their adapters, backing off
GONE_SECONDS = 600.0  # how long a deleted owner's uid is remembered (its children's deletions need nothing)
CONFLICT = "ChildConflict"
CHILD_REFUSED = "ChildRefused"


class ChildProblem(Exception):
    """A child the operator may not create or use now. `reason` is ChildRefused or an ownership verdict
    (drift.FOREIGN, TERMINATING, PREDECESSOR); `waiting`: it should resolve by itself soon."""

    def __init__(self, reason: str, message: str, waiting: bool) -> None:
        super().__init__(message)
        self.reason, self.message, self.waiting = reason, message, waiting
        self.late = False  # raised after the reconcile wrote its status (which is then read again)


def now_rfc3339() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class OperatorContext:
    """What every handler shares within one operator run (kept in kopf's memo)."""

    def __init__(self, settings: OperatorSettings, kube: Kube, metrics: OperatorMetrics) -> None:
        self.settings, self.kube, self.metrics = settings, kube, metrics
        self._locks: dict[tuple[str, str, str], threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()
        self.seen_job_phase: dict[tuple[str, str], str | None] = {}
        self.seen_ftj_phase: dict[str, str] = {}
        self.seen_pod_cause: dict[tuple[str, str], tuple[str, str] | None] = {}
        self.failures: dict[tuple[str, str, str], int] = {}  # consecutive refused/conflicting reconciles
        self.kopf_tuning: Any = None  # optional callable(kopf settings), applied last at startup (tests)
        self._rechecks: dict[tuple[str, str, str], tuple[threading.Timer, int]] = {}
        self._gone: dict[str, float] = {}  # uids of deleted custom resources -> when (their children go next)
        self.children = ChildReader(kube)  # reads of children and FineTuneJobs from kopf indices (cache.py)
        # namespace -> names of the FineTuneRuntimes listing it in defaultForNamespaces: kopf's index of the runtime
        # watch (handlers.py); None (no kopf) lists the runtimes on each call instead.
        self.runtime_claims: Mapping[str, Collection[str]] | None = None
        self.finetunejobs = FineTuneJobService(self)
        self.modelserves = ModelServeService(self)

    @contextmanager
    def lock(self, kind: str, namespace: str, name: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks[(kind, namespace, name)]
        with lock:
            yield

    def forget(self, kind: str, namespace: str, name: str) -> None:
        with self._guard:
            self._locks.pop((kind, namespace, name), None)
            self.failures.pop((kind, namespace, name), None)
        self.recheck(kind, namespace, name, wanted=False)

    def namespace_runtimes(self, namespace: str) -> list[str]:
        """The FineTuneRuntimes whose defaultForNamespaces lists `namespace` (normally none or one)."""
        if self.runtime_claims is not None:
            return sorted(set(self.runtime_claims.get(namespace, ())))
        listed = {
            item["metadata"]["name"]: list((item.get("spec") or {}).get("defaultForNamespaces") or [])
            for item in self.kube.list(k8s.FINETUNERUNTIMES, None)
        }
        return policy.namespace_claims(listed).get(namespace, [])

    def mark_gone(self, uid: str) -> None:
        """Remember a deleted owner for a while: the garbage collector deletes its children after it."""
        now = time.monotonic()
        with self._guard:
            self._gone = {key: when for key, when in self._gone.items() if now - when < GONE_SECONDS}
            self._gone[uid] = now

    def is_gone(self, uid: str) -> bool:
        with self._guard:
            return uid in self._gone

    def recheck(self, kind: str, namespace: str, name: str, wanted: bool = True) -> None:
        """Reconcile the object again later when `wanted` (nothing in Kubernetes changes when a server reads its
        refreshed serve.json): after RECHECK_MIN seconds, doubling while it stays wanted, up to RECHECK_MAX. Not
        wanted: cancel what is scheduled and start over next time."""
        key = (kind, namespace, name)
        with self._guard:
            timer, count = self._rechecks.pop(key, (None, 0))
            if timer is not None:
                timer.cancel()
            if not wanted:
                return
            delay = min(RECHECK_MIN * 2**count, RECHECK_MAX)
            timer = threading.Timer(delay, self._recheck_now, key)
            timer.daemon = True
            self._rechecks[key] = (timer, count + 1)
            timer.start()

    def _recheck_now(self, kind: str, namespace: str, name: str) -> None:
        service = self.modelserves if kind == self.modelserves.kind else self.finetunejobs
        try:
            service.reconcile(namespace, name)
        except Exception as exc:  # kopf.TemporaryError included: the resync pass retries
            log.warning("recheck of %s %s/%s failed: %s", kind, namespace, name, exc)

    def stop_rechecks(self) -> None:
        with self._guard:
            for timer, _ in self._rechecks.values():
                timer.cancel()
            self._rechecks.clear()


def _split(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(object without status, status): the spec is validated strictly, the status leniently."""
    return {k: v for k, v in body.items() if k != "status"}, body.get("status") or {}


def _parse_status(model: type[FineTuneJobStatus] | type[ModelServeStatus], raw: dict[str, Any]) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        log.warning("ignoring an unreadable status: %s", format_validation_error(exc, "status"))
    try:
        return model.model_validate({"phase": raw.get("phase")})
    except ValidationError:
        return model()


def _stub(observed: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """What a child of `body` named like `observed` looks like, for the ownership check before a patch."""
    meta = {"name": observed["metadata"]["name"], "ownerReferences": [Owner.of(body).reference()]}
    return {"kind": observed.get("kind"), "metadata": meta}


class _Service:
    kind = ""
    runtime_rules: Any = None  # (violations, effective spec) of policy.py for this kind
    resource = k8s.FINETUNEJOBS

    def __init__(self, ctx: OperatorContext) -> None:
        self.ctx = ctx

    logic: Any = ftj_logic
    refused_condition = "JobCreated"  # the condition a refused child turns False
    # The spec can change after children exist (a ModelServe's; a FineTuneJob's is immutable but for suspend): the
    # runtime's policy then holds for every edit, which is refused (its children left as they are) when it breaks it.
    editable = False

    def _apply(self, plan: Plan, body: dict[str, Any], pending: Any = None) -> dict[str, dict[str, Any] | None]:
        """Create (never adopting a foreign object), patch our own children, write status, post events.
        Returns what each create answered, by kind (None: it existed already and is ours). `pending`: a status
        to write when the plan writes none (a cleared ChildConflict)."""
        kube, meta = self.ctx.kube, body["metadata"]
        created: dict[str, dict[str, Any] | None] = {}
        for shared in plan.shared:
            self._ensure_shared(shared)
        for child in plan.create:
            obj, was_created = self._ensure(child, body, missing=True)
            created[child["kind"]] = obj if was_created else None
        for observed, patch in plan.patches:
            self._verify(observed, _stub(observed, body))
            res = k8s.BY_KIND[observed["kind"]]
            kube.patch(res, observed["metadata"].get("namespace"), observed["metadata"]["name"], patch)
        if plan.status:
            kube.patch(self.resource, meta["namespace"], meta["name"], {"status": plan.status}, "status")
        elif pending is not None:
            self._write_status(body, pending)
        for event in plan.events:
            kube.event(body, event.type, event.reason, event.message)
        self.ctx.metrics.set_phase(self.kind, meta["uid"], plan.phase)
        return created

    def _ensure(self, child: dict[str, Any], body: dict[str, Any], missing: bool) -> tuple[dict[str, Any], bool]:
        """(the child as it exists, whether this call created it). `missing`: the plan expects it absent, so
        create first and read only on 409; otherwise read first and create only when it is gone. An existing
        object is used only when its controller reference is this owner's uid (see drift.ownership)."""
        kube = self.ctx.kube
        res, meta = k8s.BY_KIND[child["kind"]], child["metadata"]
        existing = None if missing else self.ctx.children.get(res, meta.get("namespace"), meta["name"])
        if existing is None:
            try:
                created = kube.create(child)
            except KubeApiError as exc:
                if exc.status in REFUSED:
                    message = f"the API server refused {drift.describe(child)}: {exc.reason}: {exc.message}"
                    raise ChildProblem(CHILD_REFUSED, message, waiting=False) from None
                raise
            if created is not None:
                return created, True
            existing = kube.get(res, meta.get("namespace"), meta["name"])
            if existing is None:
                message = f"{drift.describe(child)} existed and was just deleted; creating ours next"
                raise ChildProblem(drift.TERMINATING, message, waiting=True)
        existing.setdefault("kind", child["kind"])
        self._verify(existing, child)
        return existing, False

    def _ensure_shared(self, obj: dict[str, Any]) -> None:
        """Create a shared object when missing (409: it exists, whoever made it, and is used as it is)."""
        try:
            self.ctx.kube.create(obj)
        except KubeApiError as exc:
            if exc.status in REFUSED:
                message = f"the API server refused {drift.describe(obj)}: {exc.reason}: {exc.message}"
                raise ChildProblem(CHILD_REFUSED, message, waiting=False) from None
            raise

    @staticmethod
    def _verify(observed: dict[str, Any], desired: dict[str, Any]) -> None:
        """Raise unless `observed` is the operator's own `desired` child."""
        verdict, why = drift.ownership(observed, desired)
        if verdict != drift.OURS:
            raise ChildProblem(verdict, why, waiting=verdict != drift.FOREIGN)

    def _write_status(self, body: dict[str, Any], status: Any) -> None:
        meta = body["metadata"]
        patch = {"status": self.logic.status_patch(status)}
        self.ctx.kube.patch(self.resource, meta["namespace"], meta["name"], patch, "status")

    def _cleared(self, body: dict[str, Any], status: Any) -> Any:
        """`status` with ChildConflict set False (the children are fine again); the same object when it is not
        True (the caller writes it only then)."""
        condition = get_condition(status.conditions, CONFLICT)
        if condition is None or condition.status != "True":
            return status
        cleared = status.model_copy(deep=True)
        generation, message = body["metadata"].get("generation"), "every child is the operator's own"
        cleared.conditions = set_condition(
            cleared.conditions, CONFLICT, "False", "Resolved", message, generation, now_rfc3339()
        )
        return cleared

    def _blocked(self, body: dict[str, Any], status: Any, problem: ChildProblem) -> kopf.TemporaryError:
        """Show the problem as conditions (and an Event when it is new); returns the error to retry with: soon
        for a child that goes away by itself, else after a delay that doubles with each consecutive failure."""
        meta = body["metadata"]
        generation, now = meta.get("generation"), now_rfc3339()
        refused = problem.reason == CHILD_REFUSED
        condition_type, condition_status = (self.refused_condition, "False") if refused else (CONFLICT, "True")
        before = get_condition(status.conditions, condition_type)
        nxt = status.model_copy(deep=True)
        conds = set_condition(
            nxt.conditions, condition_type, condition_status, problem.reason, problem.message, generation, now
        )
        if self.kind == "ModelServe" and condition_type != "Ready":
            conds = set_condition(conds, "Ready", "False", condition_type, problem.message, generation, now)
        nxt.conditions, nxt.message, nxt.observed_generation = conds, problem.message, generation
        self._write_status(body, nxt)
        if before is None or before.message != problem.message or before.status != condition_status:
            event_type = "Normal" if problem.waiting else "Warning"
            self.ctx.kube.event(body, event_type, CHILD_REFUSED if refused else CONFLICT, problem.message)
        key = (self.kind, meta["namespace"], meta["name"])
        delay = WAIT_SECONDS
        if not problem.waiting:
            failures = self.ctx.failures.get(key, 0)
            self.ctx.failures[key] = failures + 1
            delay = min(RETRY_MIN * 2**failures, RETRY_MAX)
        log.warning("%s %s/%s: %s; retrying in %.0f s", self.kind, meta["namespace"], meta["name"], problem, delay)
        return kopf.TemporaryError(problem.message, delay=delay)

    def _settled(self, body: dict[str, Any]) -> None:
        """A reconcile that met no refusal or conflict: the next refusal is retried soon again."""
        meta = body["metadata"]
        self.ctx.failures.pop((self.kind, meta["namespace"], meta["name"]), None)

    def _validate(self, body: dict[str, Any], model: Any, status_model: Any, logic: Any, outcome: list[str]):
        """(object, status, None) for a valid object; (None, status, phase) after marking an invalid one
        (one that slipped past the CRD) Failed with reason InvalidSpec."""
        without_status, raw_status = _split(body)
        status = _parse_status(status_model, raw_status)
        try:
            return model.model_validate(without_status), status, None
        except ValidationError as exc:
            outcome[0] = "invalid"
            generation = body["metadata"].get("generation")
            plan = logic.plan_invalid(status, format_validation_error(exc), generation, now_rfc3339())
            self._apply(plan, body)
            return None, status, plan.phase

    def _with_runtime(self, obj: Any, status: Any, body: dict[str, Any], fresh: bool) -> tuple[Any, str | None, bool]:
        """(the object with its FineTuneRuntime applied, None, False), or (it, phase, False) after refusing it: the
        runtime it names does not exist, or (only while `fresh`: no child created yet) several runtimes claim its
        namespace, or its spec breaks the runtime's policy (checked while `fresh`, and on every reconcile of an
        `editable` kind). Which runtime: policy.runtime_name. (it, None, True): not fresh, and the runtime that
        shaped its children cannot be read any more (deleted, invalid, contested): the children it has are kept as
        they are, never re-rendered without it."""
        namespace = body["metadata"]["namespace"]
        claimants = self.ctx.namespace_runtimes(namespace)
        try:
            name = policy.runtime_name(obj.spec.runtime_name, namespace, claimants, self.ctx.settings)
        except policy.RuntimeConflict as conflict:
            if not fresh:  # a running child is never stopped by an admin's later mistake
                where = f"{self.kind} {namespace}/{obj.metadata.name}"
                log.warning("%s: %s; rendering without a runtime", where, conflict)
                return obj, None, True
            return obj, self._refuse(body, status, str(conflict), policy.RUNTIME_CONFLICT), False
        if name is None:
            return obj, None, False
        found = self.ctx.kube.get(k8s.FINETUNERUNTIMES, None, name)
        if found is None:
            if not obj.spec.runtime_name and claimants:  # deleted since the watch saw it: its claim goes next
                raise kopf.TemporaryError(f"FineTuneRuntime {name} is being deleted", delay=WAIT_SECONDS)
            if not obj.spec.runtime_name:  # the operator's default is not installed: no runtime applies
                log.warning("the default FineTuneRuntime %s does not exist; %ss run without one", name, self.kind)
                return obj, None, False
            if not fresh:
                return obj, None, True  # deleted under a running child: keep its children as they were created
            message = (
                f"spec.runtimeName: FineTuneRuntime {name} does not exist (kubectl get finetuneruntimes lists them); "
                "name an existing runtime"
            )
            return obj, self._refuse(body, status, message, policy.RUNTIME_NOT_FOUND), False
        try:
            runtime = FineTuneRuntimeSpec.model_validate(found.get("spec") or {})
        except ValidationError as exc:  # only past an older CRD: refused once, never retried
            message = f"FineTuneRuntime {name} is invalid: {format_validation_error(exc, 'spec')}"
            if not fresh:
                log.warning("%s; rendering without it", message)
                return obj, None, True
            return obj, self._refuse(body, status, message, policy.RUNTIME_NOT_FOUND), False
        violations, effective = self.runtime_rules
        if fresh or self.editable:
            problems = violations(obj.spec, name, runtime)
            if problems and not fresh:  # the server runs the last accepted spec: it keeps its phase and Ready
                plan = self.logic.plan_refused_edit(
                    status,
                    "; ".join(problems),
                    body["metadata"].get("generation"),
                    now_rfc3339(),
                    policy.POLICY_VIOLATION,
                )
                self._apply(plan, body)
                return obj, status.phase or "Pending", False
            if problems:
                return obj, self._refuse(body, status, "; ".join(problems), policy.POLICY_VIOLATION), False
        return obj.model_copy(update={"spec": effective(obj.spec, runtime)}), None, False

    def _refuse(self, body: dict[str, Any], status: Any, message: str, reason: str) -> str:
        plan = self.logic.plan_invalid(status, message, body["metadata"].get("generation"), now_rfc3339(), reason)
        self._apply(plan, body)
        return plan.phase

    @contextmanager
    def _timed(self) -> Iterator[list[str]]:
        outcome = ["success"]
        started = time.monotonic()
        try:
            yield outcome
        except Exception:
            outcome[0] = "error"
            raise
        finally:
            self.ctx.metrics.observe(self.kind, outcome[0], time.monotonic() - started)


class FineTuneJobService(_Service):
    kind = "FineTuneJob"
    runtime_rules = (policy.finetunejob_violations, policy.effective_finetunejob)
    resource = k8s.FINETUNEJOBS
    logic = ftj_logic
    refused_condition = "JobCreated"

    def reconcile(
        self, namespace: str, name: str, body: dict[str, Any] | None = None, job: Any = UNKNOWN
    ) -> str | None:
        """Bring one FineTuneJob a step forward; returns its phase (None when it is gone)."""
        kube = self.ctx.kube
        with self.ctx.lock(self.kind, namespace, name), self._timed() as outcome:
            body = body if body is not None else kube.get(k8s.FINETUNEJOBS, namespace, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                return None
            ftj, status, invalid_phase = self._validate(body, FineTuneJob, FineTuneJobStatus, ftj_logic, outcome)
            if ftj is None:
                return invalid_phase
            if status.phase in ftj_logic.TERMINAL:
                self.ctx.metrics.set_phase(self.kind, body["metadata"]["uid"], status.phase)
                return status.phase
            ftj, refused, _ = self._with_runtime(ftj, status, body, fresh=status.job_name is None)
            if refused is not None:
                return refused
            try:
                phase = self._step(ftj, status, body, job)
            except ChildProblem as problem:
                if problem.late:
                    fresh = kube.get(k8s.FINETUNEJOBS, namespace, name) or body
                    status = _parse_status(FineTuneJobStatus, fresh.get("status") or {})
                raise self._blocked(body, status, problem) from None
            self._settled(body)
            return phase

    def _step(self, ftj: FineTuneJob, status: FineTuneJobStatus, body: dict[str, Any], job: Any) -> str:
        """Check the Job is ours and re-create any other child that went missing while it runs, then plan and
        apply. A problem with another child is raised after the status is written, so the Job's progress
        (finished, failed) still shows."""
        kube, namespace, name = self.ctx.kube, body["metadata"]["namespace"], body["metadata"]["name"]
        job_name = naming.job_name(name)
        if job is UNKNOWN:
            fresh = status.job_name is None and not status.conditions
            job = None if fresh else self.ctx.children.get(k8s.JOBS, namespace, job_name)
        problem = None
        checked = job is None  # the plan creates (and so checks) every child when there is no Job
        if job is not None:
            desired = trainer_children(ftj_logic.owner_of(ftj), ftj.spec, self.ctx.settings)
            observed = {"kind": "Job", **job}
            if ftj_logic.job_phase(job) in ftj_logic.TERMINAL:  # being deleted (TTL) or not, it says how it ended
                observed["metadata"] = {k: v for k, v in job["metadata"].items() if k != "deletionTimestamp"}
            self._verify(observed, desired[-1])
            if ftj_logic.job_phase(job) not in ftj_logic.TERMINAL:  # a finished Job needs no children
                problem, checked = self._ensure_each(desired[:-1], body), True
        if job is not None and ftj_logic.job_phase(job) not in ftj_logic.TERMINAL:
            self._apply_workload_active(job, queueing.suspend_step(job, ftj.spec).workload_active)
        cleared = self._cleared(body, status) if checked and problem is None else status
        ftj = ftj.model_copy(update={"status": cleared})
        plan = self._plan(ftj, job)
        for child in plan.create:  # expect our own Job's ADDED event, so its handler skips it
            if child["kind"] == "Job":
                self.ctx.seen_job_phase[(namespace, job_name)] = ftj_logic.job_phase(child)
        created = self._apply(plan, body, pending=cleared if cleared is not status else None)
        if "Job" in created:
            if created["Job"] is None:  # it existed after all (a restart between create and status write)
                job = kube.get(k8s.JOBS, namespace, job_name)
                ftj = ftj.model_copy(update={"status": _parse_status(FineTuneJobStatus, plan.status)})
                plan = self._plan(ftj, job)
                self._apply(plan, body)
            else:
                self.ctx.seen_job_phase[(namespace, job_name)] = ftj_logic.job_phase(created["Job"])
        if problem is not None:
            problem.late = True
            raise problem
        return plan.phase

    def _apply_workload_active(self, job: dict[str, Any], active: bool | None) -> None:
        """Set `spec.active` of the Kueue Workloads of a queued Job (found by Kueue's job-uid label, and patched
        only when the Job is their controller). Without Kueue's API installed there is nothing to set."""
        if active is None:
            return
        kube, meta = self.ctx.kube, job["metadata"]
        workloads_res = k8s.kueue_workloads(self.ctx.settings.kueue_api_version)
        try:
            workloads = kube.list(workloads_res, meta["namespace"], f"{queueing.KUEUE_JOB_UID_LABEL}={meta['uid']}")
        except KubeApiError as exc:
            if exc.status == 404:  # Kueue is not installed: the Job simply stays suspended
                return
            raise
        for workload, patch in queueing.workload_patches(workloads, active):
            owner = drift.controller_of(workload)
            if owner is None or owner.get("uid") != meta["uid"]:
                continue
            kube.patch(workloads_res, meta["namespace"], workload["metadata"]["name"], patch)

    def _ensure_each(self, children: list[dict[str, Any]], body: dict[str, Any]) -> ChildProblem | None:
        """Ensure each child exists and is ours; the first problem met, or None."""
        for child in children:
            try:
                self._ensure(child, body, missing=False)
            except ChildProblem as problem:
                return problem
        return None

    def _plan(self, ftj: FineTuneJob, job: dict[str, Any] | None) -> Plan:
        status = ftj.status or FineTuneJobStatus()
        report = None
        if job is not None and ftj_logic.needs_report(status, job):
            selector = f"{naming.JOB_NAME_LABEL}={job['metadata']['name']}"
            report = report_from_pods(
                self.ctx.kube.list(k8s.PODS, job["metadata"]["namespace"], selector), naming.TRAINER_CONTAINER
            )
        pending = self.pending_cause(job) if ftj_logic.job_phase(job) == "Pending" else None
        meta, reported = ftj.metadata, None
        # The report ConfigMap is created with the other children, before the Job; it outlives a Job that finished
        # and was removed (TTL), and then says whether the trainer got to its final metrics.
        if job is not None or status.job_name is not None:
            name = naming.report_configmap(meta.name)
            found = self.ctx.children.get(k8s.CONFIGMAPS, meta.namespace or "default", name)
            if found is not None and (drift.controller_of(found) or {}).get("uid") == meta.uid:
                reported = parse_report(found)
        return ftj_logic.plan_finetunejob(ftj, job, report, self.ctx.settings, now_rfc3339(), pending, reported)

    def report_changed(self, namespace: str, configmap: dict[str, Any]) -> None:
        """The trainer wrote its report ConfigMap: copy what validates into the status (a reconcile). The empty one
        the operator creates is no report: it must not cause a reconcile (and so no extra create attempt)."""
        if not configmap.get("data"):
            return
        owners = [
            ref["name"] for ref in configmap["metadata"].get("ownerReferences") or [] if ref.get("kind") == self.kind
        ]
        if owners and configmap["metadata"]["name"] == naming.report_configmap(owners[0]):
            self.reconcile(namespace, owners[0])

    def pending_cause(self, job: dict[str, Any]) -> tuple[str, str] | None:
        """Why a Job has no running trainer: its pods' state, else the Events on the Job (FailedCreate) or its
        newest pod (FailedMount), read by uid only while the pods do not tell."""
        kube, meta = self.ctx.kube, job["metadata"]
        pods = kube.list(k8s.PODS, meta["namespace"], f"{naming.JOB_NAME_LABEL}={meta['name']}")
        cause = ftj_logic.pending_cause(job, pods, [])
        if cause is not None:
            return cause
        # A finished pod's Events explain nothing now: with no live pod, the Job's (FailedCreate of the next pod).
        live = [pod for pod in pods if (pod.get("status") or {}).get("phase") in (None, "Pending")]
        newest = max(live, key=lambda pod: pod["metadata"].get("creationTimestamp") or "", default=job)
        uid = newest["metadata"]["uid"]
        events = kube.list(k8s.EVENTS, meta["namespace"], field_selector=f"involvedObject.uid={uid}")
        return ftj_logic.pending_cause(job, pods, events)

    def owner_of_job(self, namespace: str, job_name: str | None) -> str | None:
        """The FineTuneJob controlling trainer Job `job_name`. Pods and Events name it by label, whose value is cut
        to 63 characters for a longer name: the Job's owner reference has it whole."""
        job = self.ctx.children.get(k8s.JOBS, namespace, job_name) if job_name else None
        owner = drift.controller_of(job or {}) or {}
        return owner.get("name") if owner.get("kind") == self.kind else None

    def pod_changed(self, namespace: str, pod: dict[str, Any], deleted: bool) -> None:
        """A trainer pod changed: reconcile its FineTuneJob only when what the pod says about it changed (it got
        stuck: Unschedulable, ImagePullBackOff, ...; or got unstuck), not on every status write of the kubelet."""
        meta = pod["metadata"]
        key, owner = (namespace, meta["name"]), (meta.get("labels") or {}).get(naming.LABEL_FINETUNEJOB)
        if deleted or not owner:
            self.ctx.seen_pod_cause.pop(key, None)
            self.ctx.seen_pod_cause.pop((namespace, f"pod/{meta['name']}"), None)
            return
        cause = ftj_logic.pod_cause(pod)
        if self.ctx.seen_pod_cause.get(key) == cause:
            return
        self.ctx.seen_pod_cause[key] = cause
        self.reconcile(
            namespace, self.owner_of_job(namespace, (meta.get("labels") or {}).get(naming.JOB_NAME_LABEL)) or owner
        )

    def pod_event(self, namespace: str, pod: str, job_name: str, reason: Any, message: Any) -> None:
        """A blocking Event on a trainer pod (FailedMount) of Job `job_name`: reconcile its FineTuneJob once per new
        message (the kubelet repeats it every couple of minutes, with a growing count)."""
        key, cause = (namespace, f"pod/{pod}"), (str(reason), str(message or ""))
        owner = self.owner_of_job(namespace, job_name)
        if owner is None or self.ctx.seen_pod_cause.get(key) == cause:
            return
        self.ctx.seen_pod_cause[key] = cause
        self.reconcile(namespace, owner)

    def job_refused(self, namespace: str, event: dict[str, Any]) -> None:
        """A Job could not create its pod (FailedCreate): reconcile the FineTuneJob of a trainer Job once per new
        message (the Job controller retries with backoff and the Event's count grows)."""
        involved = event.get("involvedObject") or {}
        if event.get("reason") != "FailedCreate" or involved.get("kind") != "Job":
            return
        key = (namespace, f"job/{involved.get('name')}")
        cause = ("FailedCreate", event.get("message") or "")
        if self.ctx.seen_pod_cause.get(key) == cause:
            return
        job = self.ctx.children.get(k8s.JOBS, namespace, involved["name"])
        labelled = ((job or {}).get("metadata", {}).get("labels") or {}).get(naming.LABEL_FINETUNEJOB)
        owner = self.owner_of_job(namespace, involved["name"]) if labelled else None
        if job is None or not owner:
            return
        self.ctx.seen_pod_cause[key] = cause
        self.reconcile(namespace, owner, job=job)

    def forget(self, body: dict[str, Any]) -> None:
        """After deletion: forget the object. The garbage collector deletes its Job (ownerReference) as the
        deletion's propagation policy says; an orphaning delete keeps it, as asked."""
        meta = body["metadata"]
        self.ctx.mark_gone(meta["uid"])
        self.ctx.metrics.set_phase(self.kind, meta["uid"], None)
        self.ctx.seen_job_phase[(meta["namespace"], naming.job_name(meta["name"]))] = FORGOTTEN
        self.ctx.seen_pod_cause.pop((meta["namespace"], f"job/{naming.job_name(meta['name'])}"), None)
        self.ctx.forget(self.kind, meta["namespace"], meta["name"])


class ModelServeService(_Service):
    kind = "ModelServe"
    runtime_rules = (policy.modelserve_violations, policy.effective_modelserve)
    resource = k8s.MODELSERVES
    logic = msv_logic
    refused_condition = "Ready"
    editable = True

    def reconcile(self, namespace: str, name: str, body: dict[str, Any] | None = None) -> str | None:
        kube = self.ctx.kube
        with self.ctx.lock(self.kind, namespace, name), self._timed() as outcome:
            body = body if body is not None else kube.get(k8s.MODELSERVES, namespace, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                return None
            msv, status, invalid_phase = self._validate(body, ModelServe, ModelServeStatus, msv_logic, outcome)
            if msv is None:
                return invalid_phase
            fresh = status.deployment_name is None
            msv, refused, runtime_lost = self._with_runtime(msv, status, body, fresh=fresh)
            if refused is not None:
                return refused
            try:
                phase = self._step(msv, status, body, keep_deployment=runtime_lost)
            except ChildProblem as problem:
                raise self._blocked(body, status, problem) from None
            self._settled(body)
            return phase

    def _step(self, msv: ModelServe, status: ModelServeStatus, body: dict[str, Any], keep_deployment: bool) -> str:
        """Resolve adapters, read the children (refusing any that is not ours), plan and apply. `keep_deployment`:
        the runtime that shaped the Deployment is gone, so its drift is not repaired (see _with_runtime)."""
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        cleared = self._cleared(body, status)
        refs = sorted({a.fine_tune_job_ref.name for a in msv.spec.adapters if a.fine_tune_job_ref is not None})
        jobs = {ref: self.ctx.children.get(k8s.FINETUNEJOBS, namespace, ref) for ref in refs}
        resolution = msv_logic.resolve_adapters(msv, jobs, cleared, self.ctx.settings.adapter_store_claim)
        observed: dict[str, dict[str, Any] | None] = {}
        access_modes: dict[str, list[str]] = {}
        if not resolution.failed and not resolution.waiting and msv.spec.replicas > 1:
            config = msv_logic.serve_config(msv, resolution)
            models = server_model_storage(msv.spec, config, self.ctx.settings)
            for claim in msv_logic.mounted_claims(config, models):
                found = self.ctx.kube.get(k8s.CLAIMS, namespace, claim)
                if found is not None:
                    access_modes[claim] = list((found.get("spec") or {}).get("accessModes") or [])
        if not resolution.failed and not resolution.waiting:
            server = naming.server_name(name)
            read = self.ctx.children.get
            observed = {
                "ConfigMap": read(k8s.CONFIGMAPS, namespace, naming.server_configmap(name)),
                "Deployment": read(k8s.DEPLOYMENTS, namespace, server),
                "Service": read(k8s.SERVICES, namespace, server),
            }
            for kind, child in observed.items():
                if child is not None:
                    child.setdefault("kind", kind)
                    self._verify(child, _stub(child, body))
        reports = self._ask_servers(namespace, observed.get("Deployment"))
        plan = msv_logic.plan_modelserve(
            msv, cleared, jobs, observed, self.ctx.settings, now_rfc3339(), reports, access_modes, keep_deployment
        )
        self._apply(plan, body, pending=cleared if cleared is not status else None)
        if plan.recheck:
            self.ctx.recheck(self.kind, namespace, name)
        elif reports:
            self.ctx.recheck(self.kind, namespace, name, wanted=False)
        return plan.phase

    def _ask_servers(self, namespace: str, deployment: dict[str, Any] | None) -> list:
        """The adapter reports of the Deployment's ready server pods (none while no replica is ready)."""
        if deployment is None or not int((deployment.get("status") or {}).get("readyReplicas") or 0):
            return []
        selector = ",".join(f"{k}={v}" for k, v in sorted(deployment["spec"]["selector"]["matchLabels"].items()))
        return ask_all(server_pods(deployment, self.ctx.kube.list(k8s.PODS, namespace, selector)))

    def forget(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        self.ctx.mark_gone(meta["uid"])
        self.ctx.metrics.set_phase(self.kind, meta["uid"], None)
        self.ctx.forget(self.kind, meta["namespace"], meta["name"])
