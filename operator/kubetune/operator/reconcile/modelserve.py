"""ModelServe decisions: resolve adapters from FineTuneJobs, then render and follow the server Deployment."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from kubetune.api.base import GROUP_VERSION
from kubetune.api.engines import ENGINE_TRANSFORMERS, ENGINE_VLLM, resolve_engine
from kubetune.api.finetunejob import FineTuneJobStatus
from kubetune.api.modelserve import ModelServeStatus, ResolvedAdapter
from kubetune.api.resources import ModelServe
from kubetune.api.serving import ServeConfig
from kubetune.api.sources import ModelSource

from ..manifests.meta import Owner
from ..manifests.server import (
    mounted_claims,
    serve_configmap,
    server_deployment,
    server_model_storage,
    server_service,
    service_url,
)
from ..manifests.storage import cache_claim
from ..settings import OperatorSettings
from .conditions import get_condition, raw_condition, set_condition
from .drift import drifted, repair_patch, scaled_elsewhere
from .plan import Event, Plan
from .served_adapters import ReplicaReport, loaded_condition, needs_recheck, served_adapters

OWNED_FIELDS = (
    "phase",
    "conditions",
    "observedGeneration",
    "readyReplicas",
    "replicas",
    "url",
    "adapters",
    "adapterNames",
    "baseModel",
    "deploymentName",
    "message",
)


@dataclass
class Resolution:
    """Adapters resolved to volumes, or why not (yet)."""

    adapters: list[ResolvedAdapter] = field(default_factory=list)
    base_model: ModelSource | None = None
    waiting: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (reason, message)
    kept: list[str] = field(default_factory=list)  # adapters served from the store after their FineTuneJob went


def owner_of(msv: ModelServe) -> Owner:
    meta = msv.metadata
    return Owner(GROUP_VERSION, "ModelServe", meta.name, meta.namespace or "default", meta.uid or "")


def _job_status(job: dict[str, Any]) -> FineTuneJobStatus:
    try:
        return FineTuneJobStatus.model_validate(job.get("status") or {})
    except ValidationError:
        return FineTuneJobStatus()


def kept_in_store(
    adapter_name: str, job_name: str, previous: ModelServeStatus | None, store_claim: str
) -> ResolvedAdapter | None:
    """The adapter store copy this ModelServe already serves for a FineTuneJob that is gone (deleted, or pruned by
    Argo CD): the store outlives the job, so the server keeps it. Only a store copy: an adapter on the job's own
    output claim went with the job."""
    if previous is None or not store_claim:
        return None
    for resolved in previous.adapters:
        if (
            resolved.name == adapter_name
            and resolved.fine_tune_job == job_name
            and resolved.pvc.claim_name == store_claim
        ):
            return ResolvedAdapter(name=resolved.name, pvc=resolved.pvc, fine_tune_job=resolved.fine_tune_job)
    return None


def resolve_adapters(
    msv: ModelServe,
    jobs: dict[str, dict[str, Any] | None],
    previous: ModelServeStatus | None = None,
    store_claim: str = "",
) -> Resolution:
    """Each adapter's volume; a fineTuneJobRef must name a FineTuneJob that succeeded, or one whose adapter this
    ModelServe already serves from the adapter store (`previous` status, `store_claim`)."""
    spec = msv.spec
    result = Resolution(base_model=spec.base_model)
    for adapter in spec.adapters:
        if adapter.pvc is not None:
            result.adapters.append(ResolvedAdapter(name=adapter.name, pvc=adapter.pvc))
            continue
        assert adapter.fine_tune_job_ref is not None
        job_name = adapter.fine_tune_job_ref.name
        job = jobs.get(job_name)
        kept = kept_in_store(adapter.name, job_name, previous, store_claim) if job is None else None
        if kept is not None:
            result.adapters.append(kept)
            result.kept.append(
                f"adapter {adapter.name!r}: FineTuneJob {job_name!r} is gone; serving its copy in the adapter store "
                f"({kept.pvc.claim_name}/{kept.pvc.path})"
            )
            continue
        if job is None:
            result.failed.append(
                ("FineTuneJobNotFound", f"adapter {adapter.name!r}: FineTuneJob {job_name!r} does not exist")
            )
            continue
        status = _job_status(job)
        if status.phase == "Failed":
            why = f": {status.message}" if status.message else ""
            result.failed.append(
                ("FineTuneJobFailed", f"adapter {adapter.name!r}: FineTuneJob {job_name!r} failed{why}")
            )
        elif status.phase != "Succeeded" or status.output is None or status.output.pvc is None:
            result.waiting.append(f"FineTuneJob {job_name!r} is {status.phase} (adapter {adapter.name!r})")
        elif status.output.method == "full":
            pvc = status.output.pvc
            result.failed.append(
                (
                    "NotAnAdapter",
                    f"adapter {adapter.name!r}: FineTuneJob {job_name!r} used method full and wrote a whole model, "
                    f"not an adapter; serve it as baseModel: {{pvc: {{claimName: {pvc.claim_name}, path: "
                    f"{pvc.path}}}}}",
                )
            )
        else:
            result.adapters.append(ResolvedAdapter(name=adapter.name, pvc=status.output.pvc, fine_tune_job=job_name))
            trained_on = status.output.base_model
            if result.base_model is None:
                result.base_model = trained_on
            elif trained_on is not None and trained_on.describe() != result.base_model.describe():
                result.failed.append(
                    (
                        "BaseModelMismatch",
                        f"adapter {adapter.name!r} was trained on {trained_on.describe()} but this ModelServe "
                        f"serves {result.base_model.describe()}",
                    )
                )
    if result.base_model is None and result.kept and previous is not None:
        result.base_model = previous.base_model  # the FineTuneJob that named it is gone; its adapter is not
    if result.base_model is None and result.kept and not result.failed and not result.waiting:
        result.failed.append(
            ("BaseModelUnknown", "the FineTuneJob that named the base model is gone: set spec.baseModel")
        )
    return result


def storage_refusal(replicas: int, mounted: dict[str, bool], access_modes: dict[str, list[str]]) -> str | None:
    """Why `replicas` server pods cannot share these claims, or None. Replicas land on several nodes: a read-only
    mount needs ReadOnlyMany or ReadWriteMany, a writable one ReadWriteMany; a ReadWriteOnce claim attaches to one
    node (the second replica would hang in ContainerCreating on Multi-Attach). Claims not found are left to the
    pods' own FailedMount."""
    if replicas <= 1:
        return None
    refused = []
    for claim, read_only in sorted(mounted.items()):
        modes = access_modes.get(claim)
        if modes is None:
            continue
        shared = {"ReadWriteMany", "ReadOnlyMany"} if read_only else {"ReadWriteMany"}
        if not shared & set(modes):
            refused.append(f"{claim} ({', '.join(modes) or 'no access modes'})")
    if not refused:
        return None
    return (
        f"replicas {replicas} need claims that several nodes can mount (ReadWriteMany, or ReadOnlyMany for "
        f"adapters and models), but these cannot: {', '.join(refused)}. Use replicas 1, move the adapters to a "
        "ReadWriteMany adapter store (operator setting adapter_store_claim), or copy them to a ReadWriteMany claim."
    )


def status_patch(status: ModelServeStatus) -> dict[str, Any]:
    wire = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return {name: wire.get(name) for name in OWNED_FIELDS}


def serve_config(msv: ModelServe, resolution: Resolution) -> ServeConfig:
    """What the server loads. Clients name the base model by its Hub id (as with other OpenAI-compatible
    servers), or `base` when it comes from a volume."""
    spec = msv.spec
    assert resolution.base_model is not None
    return ServeConfig(
        base_model=resolution.base_model,
        served_base_name=resolution.base_model.name or "base",
        adapters=resolution.adapters,
        quantization=spec.quantization,
        merge_adapter=spec.merge_adapter,
        generation=spec.generation,
        # auto on GPUs stays auto: the server checks the architecture against vLLM's and can fall back.
        engine=spec.engine if resolve_engine(spec.engine, spec.resources.gpus) == ENGINE_VLLM else ENGINE_TRANSFORMERS,
        vllm=spec.vllm,
    )


def desired_children(msv: ModelServe, resolution: Resolution, settings: OperatorSettings) -> list[dict[str, Any]]:
    owner, config = owner_of(msv), serve_config(msv, resolution)
    return [
        serve_configmap(owner, config),
        server_deployment(owner, msv.spec, config, settings),
        server_service(owner, msv.spec),
    ]


def _rollout(deployment: dict[str, Any], wanted: int) -> tuple[bool, str]:
    """(complete, what is left) as `kubectl rollout status` judges it: the controller saw the newest spec, every
    replica runs the newest template and is available, and no replica of an older ReplicaSet is left."""
    meta, status = deployment.get("metadata") or {}, deployment.get("status") or {}
    if int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 0):
        return False, "the Deployment controller has not seen the newest spec yet"
    updated, total = int(status.get("updatedReplicas") or 0), int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if updated < wanted:
        return False, f"{updated}/{wanted} server replicas updated"
    if total > updated:
        return False, f"{total - updated} old server replica(s) still running"
    if available < wanted:
        return False, f"{available}/{wanted} updated server replicas available"
    return True, f"{available}/{wanted} server replicas ready"


def _deployment_state(deployment: dict[str, Any] | None, wanted: int) -> tuple[str, str, str, int]:
    """(phase, reason, message, readyReplicas) from the observed Deployment: Ready only once the rollout is
    complete (a stuck rollout with an old replica still serving is not Ready)."""
    if deployment is None:
        return "Deploying", "Creating", "creating the server Deployment", 0
    status = deployment.get("status") or {}
    ready = int(status.get("readyReplicas") or 0)
    progressing = raw_condition(deployment, "Progressing") or {}
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return "Failed", "ProgressDeadlineExceeded", progressing.get("message") or "the rollout did not finish", ready
    complete, message = _rollout(deployment, wanted)
    if complete and wanted == 0:
        return "Deploying", "ScaledToZero", "replicas is 0: no server pod runs", ready
    if complete:
        return "Ready", "RolloutComplete", message, ready
    return "Deploying", "RolloutInProgress", message, ready


def _unavailable(conds: list, reason: str, message: str, generation: int | None, now: str) -> list:
    """No server to offer: Available, Progressing and Ready say so (a ModelServe whose FineTuneJob went away
    must not keep `Available=True`)."""
    conds = set_condition(conds, "Available", "False", reason, message, generation, now)
    conds = set_condition(conds, "Progressing", "False", reason, message, generation, now)
    conds = set_condition(conds, "AdaptersLoaded", "False", reason, message, generation, now)
    return set_condition(conds, "Ready", "False", reason, message, generation, now)


def plan_modelserve(
    msv: ModelServe,
    status: ModelServeStatus,
    jobs: dict[str, dict[str, Any] | None],
    observed: dict[str, dict[str, Any] | None],
    settings: OperatorSettings,
    now: str,
    reports: list[ReplicaReport] | None = None,
    access_modes: dict[str, list[str]] | None = None,
    keep_deployment: bool = False,
) -> Plan:
    """`observed` maps each desired child's kind ('ConfigMap', 'Deployment', 'Service') to what exists; `reports`
    are the ready server replicas' GET /adapters answers (served_adapters.py); `access_modes` the access modes of
    the claims the replicas mount (read when replicas > 1); `keep_deployment`: an existing Deployment is left as
    it is (the FineTuneRuntime that shaped it cannot be read any more)."""
    plan = Plan()
    generation = msv.metadata.generation
    nxt = status.model_copy(deep=True)
    nxt.observed_generation = generation
    nxt.replicas = msv.spec.replicas
    resolution = resolve_adapters(msv, jobs, status, settings.adapter_store_claim)
    if not resolution.failed and not resolution.waiting:
        config = serve_config(msv, resolution)
        mounted = mounted_claims(config, server_model_storage(msv.spec, config, settings))
        refusal = storage_refusal(msv.spec.replicas, mounted, access_modes or {})
        if refusal is not None:
            resolution.failed.append(("StorageNotShared", refusal))
    conds = nxt.conditions
    if get_condition(conds, "Validated") is not None:  # a refusal of plan_invalid is over: the spec passed
        conds = set_condition(conds, "Validated", "True", "SpecValid", "the spec is valid", generation, now)
    if resolution.failed:
        reason, _ = resolution.failed[0]
        message = "; ".join(text for _, text in resolution.failed)
        nxt.phase, nxt.message = "Failed", message
        conds = set_condition(conds, "AdaptersReady", "False", reason, message, generation, now)
        conds = _unavailable(conds, reason, message, generation, now)
    elif resolution.waiting:
        message = "waiting for " + "; ".join(resolution.waiting)
        nxt.phase, nxt.message = "WaitingForAdapters", message
        conds = set_condition(conds, "AdaptersReady", "False", "WaitingForFineTuneJob", message, generation, now)
        conds = _unavailable(conds, "WaitingForFineTuneJob", message, generation, now)
    else:
        owner = owner_of(msv)
        deployment = observed.get("Deployment")
        desired = desired_children(msv, resolution, settings)
        for child in desired:
            current = observed.get(child["kind"])
            if current is None:
                plan.create.append(child)
            elif drifted(current, child) and not (keep_deployment and child["kind"] == "Deployment"):
                plan.patches.append((current, repair_patch(child, current)))
        if any(child["kind"] == "Deployment" for child in plan.create):
            deployment = None
            models = server_model_storage(msv.spec, serve_config(msv, resolution), settings)
            cache = cache_claim(owner.namespace, models, settings)
            plan.shared = [cache] if cache is not None else []
        wanted = msv.spec.replicas
        if deployment is not None and scaled_elsewhere(deployment):  # the autoscaler's size is the one wanted
            wanted = int((deployment.get("spec") or {}).get("replicas", wanted))
            nxt.replicas = wanted
        phase, reason, message, ready = _deployment_state(deployment, wanted)
        if phase != "Failed" and any(current["kind"] == "Deployment" for current, _ in plan.patches):
            # What was observed predates this reconcile's patch: a rollout of the patched spec starts now.
            phase, reason, message = "Deploying", "RolloutInProgress", "updating the server Deployment"
        nxt.phase, nxt.message, nxt.ready_replicas = phase, message, ready
        nxt.adapters = served_adapters(resolution.adapters, reports or [])
        plan.recheck = needs_recheck(nxt.adapters, reports or [])
        nxt.adapter_names = ",".join(adapter.name for adapter in resolution.adapters) or None
        nxt.base_model = resolution.base_model
        nxt.deployment_name = next(c for c in desired if c["kind"] == "Deployment")["metadata"]["name"]
        nxt.url = service_url(owner, msv.spec, settings.cluster_domain)
        count = len(resolution.adapters)
        resolved = "; ".join([f"{count} adapter(s) resolved", *resolution.kept])
        conds = set_condition(conds, "AdaptersReady", "True", "Resolved", resolved, generation, now)
        loaded, reason_loaded, message_loaded = loaded_condition(nxt.adapters)
        before = get_condition(status.conditions, "AdaptersLoaded")
        if reason_loaded == "AdapterRefused" and (before is None or before.message != message_loaded):
            plan.events.append(Event("Warning", "AdapterRefused", message_loaded))  # kubectl describe shows why
        conds = set_condition(conds, "AdaptersLoaded", loaded, reason_loaded, message_loaded, generation, now)
        available = "True" if ready >= 1 else "False"
        conds = set_condition(conds, "Available", available, reason, message, generation, now)
        rolling = "True" if reason in ("Creating", "RolloutInProgress") else "False"
        conds = set_condition(conds, "Progressing", rolling, reason, message, generation, now)
        conds = set_condition(conds, "Ready", "True" if phase == "Ready" else "False", reason, message, generation, now)
    nxt.conditions = conds
    plan.phase = nxt.phase
    if nxt.phase != status.phase:
        kind = "Warning" if nxt.phase == "Failed" else "Normal"
        plan.events.append(Event(kind, nxt.phase, nxt.message or nxt.phase))
    plan.status = status_patch(nxt)
    if status_patch(status) == plan.status:
        plan.status = {}
    return plan


def plan_invalid(
    status: ModelServeStatus, message: str, generation: int | None, now: str, reason: str = "InvalidSpec"
) -> Plan:
    """A ModelServe that slipped past the CRD (or that its FineTuneRuntime refuses: `reason` PolicyViolation or
    RuntimeNotFound): Failed, nothing deployed."""
    nxt = status.model_copy(deep=True)
    nxt.phase, nxt.message, nxt.observed_generation = "Failed", message, generation
    nxt.conditions = set_condition(nxt.conditions, "Ready", "False", reason, message, generation, now)
    if reason != "InvalidSpec":
        nxt.conditions = set_condition(nxt.conditions, "Validated", "False", reason, message, generation, now)
    plan = Plan(phase="Failed", status=status_patch(nxt))
    if status_patch(status) == plan.status:
        plan.status = {}
    elif status.phase != "Failed":
        plan.events.append(Event("Warning", reason, message))
    return plan


def plan_refused_edit(
    status: ModelServeStatus, problems: str, generation: int | None, now: str, reason: str = "PolicyViolation"
) -> Plan:
    """An edit of a deployed ModelServe that its FineTuneRuntime's policy refuses: the children keep the last
    accepted spec and go on serving, so phase and Ready stay what they are; Validated=False says why this
    generation is not applied."""
    message = f"this edit is refused ({problems}); the server keeps running the last accepted spec"
    nxt = status.model_copy(deep=True)
    nxt.message, nxt.observed_generation = message, generation
    nxt.conditions = set_condition(nxt.conditions, "Validated", "False", reason, message, generation, now)
    plan = Plan(phase=status.phase or "Pending", status=status_patch(nxt))
    if status_patch(status) == plan.status:
        plan.status = {}
    else:
        plan.events.append(Event("Warning", reason, message))
    return plan
