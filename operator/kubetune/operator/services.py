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
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import ValidationError

from kubetune.api.errors import format_validation_error
from kubetune.api.finetunejob import FineTuneJobStatus
from kubetune.api.modelserve import ModelServeStatus
from kubetune.api.resources import FineTuneJob, ModelServe

from . import kube as k8s
from . import naming
from .kube import Kube
from .metrics import OperatorMetrics
from .reconcile import finetunejob as ftj_logic
from .reconcile import modelserve as msv_logic
from .reconcile.plan import Plan
from .reconcile.report import report_from_pods
from .settings import OperatorSettings

log = logging.getLogger(__name__)
UNKNOWN: Any = object()
FORGOTTEN = "Forgotten"  # the owner is being deleted: the Job's own deletion needs no reconcile


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
        self.kopf_tuning: Any = None  # optional callable(kopf settings), applied last at startup (tests)
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


class _Service:
    kind = ""
    resource = k8s.FINETUNEJOBS

    def __init__(self, ctx: OperatorContext) -> None:
        self.ctx = ctx

    def _apply(self, plan: Plan, body: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
        """Create, patch, write status, post events. Returns what each create answered, by kind."""
        kube, meta = self.ctx.kube, body["metadata"]
        created: dict[str, dict[str, Any] | None] = {}
        for child in plan.create:
            created[child["kind"]] = kube.create(child)
        for observed, patch in plan.patches:
            res = k8s.BY_KIND[observed["kind"]]
            kube.patch(res, observed["metadata"].get("namespace"), observed["metadata"]["name"], patch)
        if plan.status:
            kube.patch(self.resource, meta["namespace"], meta["name"], {"status": plan.status}, "status")
        for event in plan.events:
            kube.event(body, event.type, event.reason, event.message)
        self.ctx.metrics.set_phase(self.kind, meta["uid"], plan.phase)
        return created

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
    resource = k8s.FINETUNEJOBS

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
            ftj = ftj.model_copy(update={"status": status})
            if status.phase in ftj_logic.TERMINAL:
                self.ctx.metrics.set_phase(self.kind, body["metadata"]["uid"], status.phase)
                return status.phase
            job_name = naming.job_name(name)
            if job is UNKNOWN:
                fresh = status.job_name is None and not status.conditions
                job = None if fresh else kube.get(k8s.JOBS, namespace, job_name)
            plan = self._plan(ftj, job)
            for child in plan.create:  # expect our own Job's ADDED event, so its handler skips it
                if child["kind"] == "Job":
                    self.ctx.seen_job_phase[(namespace, job_name)] = ftj_logic.job_phase(child)
            created = self._apply(plan, body)
            if "Job" in created:
                if created["Job"] is None:  # it existed after all (a restart between create and status write)
                    job = kube.get(k8s.JOBS, namespace, job_name)
                    ftj = ftj.model_copy(update={"status": _parse_status(FineTuneJobStatus, plan.status)})
                    plan = self._plan(ftj, job)
                    self._apply(plan, body)
                else:
                    self.ctx.seen_job_phase[(namespace, job_name)] = ftj_logic.job_phase(created["Job"])
            return plan.phase

    def _plan(self, ftj: FineTuneJob, job: dict[str, Any] | None) -> Plan:
        status = ftj.status or FineTuneJobStatus()
        report = None
        if job is not None and ftj_logic.needs_report(status, job):
            selector = f"{naming.JOB_NAME_LABEL}={job['metadata']['name']}"
            report = report_from_pods(
                self.ctx.kube.list(k8s.PODS, job["metadata"]["namespace"], selector), naming.TRAINER_CONTAINER
            )
        return ftj_logic.plan_finetunejob(ftj, job, report, self.ctx.settings, now_rfc3339())

    def forget(self, body: dict[str, Any]) -> None:
        """After deletion: forget the object. The garbage collector deletes its Job (ownerReference) as the
        deletion's propagation policy says; an orphaning delete keeps it, as asked."""
        meta = body["metadata"]
        self.ctx.metrics.set_phase(self.kind, meta["uid"], None)
        self.ctx.seen_job_phase[(meta["namespace"], naming.job_name(meta["name"]))] = FORGOTTEN
        self.ctx.forget(self.kind, meta["namespace"], meta["name"])


class ModelServeService(_Service):
    kind = "ModelServe"
    resource = k8s.MODELSERVES

    def reconcile(self, namespace: str, name: str, body: dict[str, Any] | None = None) -> str | None:
        kube = self.ctx.kube
        with self.ctx.lock(self.kind, namespace, name), self._timed() as outcome:
            body = body if body is not None else kube.get(k8s.MODELSERVES, namespace, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                return None
            msv, status, invalid_phase = self._validate(body, ModelServe, ModelServeStatus, msv_logic, outcome)
            if msv is None:
                return invalid_phase
            refs = sorted({a.fine_tune_job_ref.name for a in msv.spec.adapters if a.fine_tune_job_ref is not None})
            jobs = {ref: kube.get(k8s.FINETUNEJOBS, namespace, ref) for ref in refs}
            resolution = msv_logic.resolve_adapters(msv, jobs)
            observed: dict[str, dict[str, Any] | None] = {}
            if not resolution.failed and not resolution.waiting:
                server = naming.server_name(name)
                observed = {
                    "ConfigMap": kube.get(k8s.CONFIGMAPS, namespace, naming.server_configmap(name)),
                    "Deployment": kube.get(k8s.DEPLOYMENTS, namespace, server),
                    "Service": kube.get(k8s.SERVICES, namespace, server),
                }
            plan = msv_logic.plan_modelserve(msv, status, jobs, observed, self.ctx.settings, now_rfc3339())
            self._apply(plan, body)
            return plan.phase

    def forget(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        self.ctx.metrics.set_phase(self.kind, meta["uid"], None)
        self.ctx.forget(self.kind, meta["namespace"], meta["name"])
