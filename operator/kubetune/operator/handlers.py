"""kopf handlers: thin glue from watch events to the reconcile services (registered on REGISTRY)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from kubetune.api.base import API_GROUP, API_VERSION

from . import naming
from .manifests.trainer import REPORT_COMPONENT
from .reconcile.finetunejob import job_phase
from .reconcile.trainer_report import without_results
from .services import FORGOTTEN, OperatorContext

REGISTRY = kopf.OperatorRegistry()
FTJ = (API_GROUP, API_VERSION, "finetunejobs")
MSV = (API_GROUP, API_VERSION, "modelserves")
OWNED_BY_FTJ = {naming.LABEL_FINETUNEJOB: kopf.PRESENT}
OWNED_BY_MSV = {naming.LABEL_MODELSERVE: kopf.PRESENT}
OURS = f"{naming.LABEL_MANAGED_BY}={naming.MANAGED_BY}"  # every child (ConfigMaps belong to both kinds)
# The children the operator watches, by the label its own objects carry (a server-side selector per watch).
CHILD_WATCHES = {
    ("batch", "v1", "jobs"): naming.LABEL_FINETUNEJOB,
    ("", "v1", "pods"): naming.LABEL_FINETUNEJOB,
    ("apps", "v1", "deployments"): naming.LABEL_MODELSERVE,
    ("", "v1", "services"): naming.LABEL_MODELSERVE,
    ("", "v1", "configmaps"): OURS,
    ("", "v1", "persistentvolumeclaims"): naming.LABEL_FINETUNEJOB,
    ("", "v1", "serviceaccounts"): naming.LABEL_FINETUNEJOB,
    ("rbac.authorization.k8s.io", "v1", "roles"): naming.LABEL_FINETUNEJOB,
    ("rbac.authorization.k8s.io", "v1", "rolebindings"): naming.LABEL_FINETUNEJOB,
}
# The children read from kopf indices instead of GETs (cache.py): kind -> (resource, index id).
CACHED_CHILDREN = {
    "Job": (("batch", "v1", "jobs"), "cached_jobs"),
    "Deployment": (("apps", "v1", "deployments"), "cached_deployments"),
    "Service": (("", "v1", "services"), "cached_services"),
    "ConfigMap": (("", "v1", "configmaps"), "cached_configmaps"),
    "PersistentVolumeClaim": (("", "v1", "persistentvolumeclaims"), "cached_persistentvolumeclaims"),
    "ServiceAccount": (("", "v1", "serviceaccounts"), "cached_serviceaccounts"),
    "Role": (("rbac.authorization.k8s.io", "v1", "roles"), "cached_roles"),
    "RoleBinding": (("rbac.authorization.k8s.io", "v1", "rolebindings"), "cached_rolebindings"),
}
# The only Events watched (server-side field selectors): a Job controller that could not create a pod (a quota,
# PodSecurity) changes no Job status; a kubelet that cannot mount a pod's volume changes no pod status either. kopf
# opens one watch per resource with one selector, and a field selector cannot OR two values: the same Events are
# also served as events.k8s.io/v1, so the second selector watches that API.
REFUSED_PODS = "involvedObject.kind=Job,reason=FailedCreate"
STUCK_MOUNTS = "regarding.kind=Pod,reason=FailedMount"
EVENTS_V1 = ("events.k8s.io", "v1", "events")
RETRY_SECONDS = 5  # a failed reconcile (API hiccup) is retried soon, not after kopf's default minute
RESYNC_SECONDS = 120  # event handlers are not retried by kopf: a periodic pass catches anything missed (runner.py)


def _ctx(memo: Any) -> OperatorContext:
    return memo.ctx


def _by_name(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """A child as the watch last saw it, by (namespace, name): what cache.ChildReader reads instead of a GET."""
    return {(namespace, name): dict(body)}


def _configmap_by_name(
    body: kopf.Body, namespace: str, name: str, labels: kopf.Labels, **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    """As _by_name, but a trainer's report ConfigMap without the result files it carries for `kubetune results`."""
    configmap = dict(body)
    if labels.get(naming.LABEL_COMPONENT) == REPORT_COMPONENT:
        configmap = without_results(configmap)
    return {(namespace, name): configmap}


for _kind, (_resource, _index_id) in CACHED_CHILDREN.items():
    _label = CHILD_WATCHES[_resource].split("=")[0]
    _indexer = _configmap_by_name if _kind == "ConfigMap" else _by_name
    kopf.index(*_resource, id=_index_id, labels={_label: kopf.PRESENT}, registry=REGISTRY)(_indexer)
# A ModelServe reads the FineTuneJobs it serves from (their phase and output) from kopf's index too: a phase change
# reaches the index before finetunejob_phase_changed wakes the ModelServe.
CACHED_FINETUNEJOBS = "cached_finetunejobs"
kopf.index(*FTJ, id=CACHED_FINETUNEJOBS, registry=REGISTRY)(_by_name)
# Which FineTuneRuntimes are the default of which namespaces (spec.defaultForNamespaces): the runtimes list the
# namespaces, so the operator needs no read of Namespaces. kopf watches a cluster-scoped kind cluster-wide in both
# install modes (with --namespace too), and starts no handler before this index is filled from its initial LIST.
RUNTIMES = (API_GROUP, API_VERSION, "finetuneruntimes")
RUNTIME_CLAIMS = "runtime_claims"


@kopf.index(*RUNTIMES, id=RUNTIME_CLAIMS, registry=REGISTRY)
def runtime_claims(spec: kopf.Spec, name: str, **_: Any) -> dict[str, str]:
    """namespace -> this runtime's name, for each namespace it is the default of (kopf collects every runtime)."""
    namespaces = spec.get("defaultForNamespaces") or []
    return {namespace: name for namespace in namespaces if isinstance(namespace, str)}


@kopf.on.startup(registry=REGISTRY)
def configure(settings: kopf.OperatorSettings, memo: Any, **kwargs: Any) -> None:
    """kopf's bookkeeping under kubetune.dev, quiet event posting, metrics endpoint.

    No handler needs a finalizer (owner references and the garbage collector clean up; no kopf timers, no
    mandatory delete handler), so kopf adds none. The name is still set: kopf removes a finalizer of that name
    that no handler requires, which migrates objects an older operator finalized (`kubetune.dev/finalizer`)."""
    ctx = _ctx(memo)
    for kind, (_, index_id) in CACHED_CHILDREN.items():  # live views, filled before any other handler runs
        ctx.children.attach(kind, kwargs[index_id])
    ctx.children.attach("FineTuneJob", kwargs[CACHED_FINETUNEJOBS])
    ctx.runtime_claims = kwargs[RUNTIME_CLAIMS]
    settings.persistence.finalizer = naming.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=API_GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.scanning.disabled = True
    settings.execution.max_workers = ctx.settings.workers
    settings.peering.standalone = not ctx.settings.peering
    if ctx.settings.peering:
        settings.peering.name = ctx.settings.peering
    settings.watching.server_timeout = 300
    watch_only_our_children(settings)
    if ctx.kopf_tuning is not None:
        ctx.kopf_tuning(settings)
    ctx.metrics.serve(ctx.settings.metrics_port)


def watch_only_our_children(settings: kopf.OperatorSettings) -> None:
    """Ask the API server to filter the child watches (`labelSelector=`): the handlers' `labels=` filter is applied
    by kopf after every Job, Deployment and Service of the watched namespaces has been sent, decoded and cached."""
    for resource, label in CHILD_WATCHES.items():
        settings.watching.label_selectors[resource] = label
    settings.watching.field_selectors[("", "v1", "events")] = REFUSED_PODS
    settings.watching.field_selectors[EVENTS_V1] = STUCK_MOUNTS


@kopf.on.cleanup(registry=REGISTRY)
def shutdown(memo: Any, **_: Any) -> None:
    _ctx(memo).metrics.stop()


@kopf.on.login(registry=REGISTRY)
def login(memo: Any, **_: Any) -> kopf.ConnectionInfo:
    """kopf uses the same credentials as the operator's own client (one source of truth)."""
    config = _ctx(memo).kube.client.configuration
    token = (config.api_key or {}).get("authorization") or (config.api_key or {}).get("BearerToken")
    scheme = None
    if token and " " in token:
        scheme, token = token.split(" ", 1)
    return kopf.ConnectionInfo(
        server=config.host,
        ca_path=config.ssl_ca_cert,
        insecure=not config.verify_ssl,
        scheme=scheme or ("Bearer" if token else None),
        token=token,
        certificate_path=config.cert_file,
        private_key_path=config.key_file,
    )


# ---- FineTuneJob -------------------------------------------------------------------------------
@kopf.on.create(*FTJ, registry=REGISTRY, backoff=RETRY_SECONDS)
def finetunejob_created(body: kopf.Body, name: str, namespace: str, memo: Any, **_: Any) -> None:
    _ctx(memo).finetunejobs.reconcile(namespace, name, body=dict(body))


@kopf.on.resume(*FTJ, registry=REGISTRY, backoff=RETRY_SECONDS)
def finetunejob_resumed(name: str, namespace: str, memo: Any, **_: Any) -> None:
    _ctx(memo).finetunejobs.reconcile(namespace, name)


@kopf.on.update(*FTJ, field="spec", registry=REGISTRY, backoff=RETRY_SECONDS)
def finetunejob_updated(name: str, namespace: str, memo: Any, **_: Any) -> None:
    """Only `suspend` may change (CEL keeps the rest immutable); it is passed through to the Job."""
    _ctx(memo).finetunejobs.reconcile(namespace, name)


@kopf.on.event("batch", "v1", "jobs", labels=OWNED_BY_FTJ, registry=REGISTRY)
def trainer_job_changed(event: kopf.RawEvent, body: kopf.Body, namespace: str, memo: Any, **_: Any) -> None:
    """Follow the trainer Job; skip events that do not change its state as the FineTuneJob sees it."""
    ctx = _ctx(memo)
    owner = body.get("metadata", {}).get("labels", {}).get(naming.LABEL_FINETUNEJOB)
    owners = [
        ref["name"] for ref in body.get("metadata", {}).get("ownerReferences", []) if ref.get("kind") == "FineTuneJob"
    ]
    owner = owners[0] if owners else owner
    if not owner:
        return
    key = (namespace, body["metadata"]["name"])
    deleted = event.get("type") == "DELETED"
    phase = None if deleted else job_phase(dict(body))
    last = ctx.seen_job_phase.get(key)
    if key in ctx.seen_job_phase and last == phase and event.get("type") is not None:
        return
    if deleted and last in ("Succeeded", "Failed", FORGOTTEN):  # removal of a finished Job (TTL, GC) changes nothing
        ctx.seen_job_phase.pop(key, None)
        return
    ctx.seen_job_phase[key] = phase
    ctx.finetunejobs.reconcile(namespace, owner, job=None if deleted else dict(body))


@kopf.on.event("", "v1", "pods", labels=OWNED_BY_FTJ, registry=REGISTRY)
def trainer_pod_changed(event: kopf.RawEvent, body: kopf.Body, namespace: str, memo: Any, **_: Any) -> None:
    """The Job's status does not change when its pod is Unschedulable or cannot pull its image: the pod does."""
    _ctx(memo).finetunejobs.pod_changed(namespace, dict(body), event.get("type") == "DELETED")


@kopf.on.event("", "v1", "configmaps", labels=OWNED_BY_FTJ, registry=REGISTRY)
def trainer_reported(event: kopf.RawEvent, body: kopf.Body, namespace: str, memo: Any, **_: Any) -> None:
    """The trainer's report ConfigMap changed (progress, final metrics): the operator copies them into the status."""
    component = (body.get("metadata", {}).get("labels") or {}).get(naming.LABEL_COMPONENT)
    if event.get("type") != "DELETED" and component == REPORT_COMPONENT:
        _ctx(memo).finetunejobs.report_changed(namespace, dict(body))


@kopf.on.event("", "v1", "events", registry=REGISTRY)
def trainer_pod_refused(body: kopf.Body, namespace: str, memo: Any, **_: Any) -> None:
    """A FailedCreate Event of a Job (server-side field selector REFUSED_PODS): show it on the FineTuneJob."""
    _ctx(memo).finetunejobs.job_refused(namespace, dict(body))


@kopf.on.event("", "v1", "configmaps", labels={naming.LABEL_MANAGED_BY: naming.MANAGED_BY}, registry=REGISTRY)
@kopf.on.event("", "v1", "persistentvolumeclaims", labels=OWNED_BY_FTJ, registry=REGISTRY)
@kopf.on.event("", "v1", "serviceaccounts", labels=OWNED_BY_FTJ, registry=REGISTRY)
@kopf.on.event("rbac.authorization.k8s.io", "v1", "roles", labels=OWNED_BY_FTJ, registry=REGISTRY)
@kopf.on.event("rbac.authorization.k8s.io", "v1", "rolebindings", labels=OWNED_BY_FTJ, registry=REGISTRY)
async def child_deleted(event: kopf.RawEvent, body: kopf.Body, namespace: str, memo: Any, **_: Any) -> None:
    """A child deleted under a running FineTuneJob, or a ModelServe's serve.json, comes back at once (the cached
    read may still have shown it a moment ago). Deletions by the garbage collector after their owner, or of a
    finished job's children, need nothing. Async: every other event of these kinds returns at once, in the loop
    (no thread hop for thousands of ADDED/MODIFIED events at scale)."""
    if event.get("type") != "DELETED":
        return
    ctx = _ctx(memo)
    owner = next((ref for ref in body.get("metadata", {}).get("ownerReferences", []) if ref.get("controller")), {})
    if not owner or ctx.is_gone(owner.get("uid", "")):
        return
    if owner.get("kind") == "FineTuneJob":
        phase = ctx.seen_job_phase.get((namespace, naming.job_name(owner["name"])))
        if phase not in ("Succeeded", "Failed", FORGOTTEN):
            await asyncio.to_thread(ctx.finetunejobs.reconcile, namespace, owner["name"])
    elif owner.get("kind") == "ModelServe":
        await asyncio.to_thread(ctx.modelserves.reconcile, namespace, owner["name"])


@kopf.index("", "v1", "pods", labels=OWNED_BY_FTJ, registry=REGISTRY)
def trainer_pods(namespace: str, name: str, labels: kopf.Labels, **_: Any) -> dict[tuple[str, str], str]:
    """Trainer pod -> its Job (an Event names only the pod; the Job's owner reference names the FineTuneJob)."""
    return {(namespace, name): labels.get(naming.JOB_NAME_LABEL, "")}


@kopf.on.event(*EVENTS_V1, registry=REGISTRY)
def trainer_volume_stuck(body: kopf.Body, namespace: str, memo: Any, trainer_pods: kopf.Index, **_: Any) -> None:
    """A FailedMount Event of a trainer pod (server-side field selector STUCK_MOUNTS): show it on the FineTuneJob
    now, not at the next resync (the pod's own status only says ContainerCreating)."""
    regarding = body.get("regarding") or {}
    job = next(iter(trainer_pods.get((namespace, regarding.get("name")), [])), None)
    if job:
        _ctx(memo).finetunejobs.pod_event(namespace, regarding["name"], job, body.get("reason"), body.get("note"))


@kopf.index(*MSV, registry=REGISTRY)
def modelserves_by_job(name: str, namespace: str, spec: kopf.Spec, **_: Any) -> dict[tuple[str, str], str]:
    """Which ModelServes wait on which FineTuneJob (in memory, no API calls)."""
    return {
        (namespace, adapter["fineTuneJobRef"]["name"]): name
        for adapter in spec.get("adapters") or []
        if isinstance(adapter, dict) and isinstance(adapter.get("fineTuneJobRef"), dict)
    }


@kopf.on.event(*FTJ, registry=REGISTRY)
def finetunejob_phase_changed(
    event: kopf.RawEvent,
    body: kopf.Body,
    namespace: str,
    name: str,
    memo: Any,
    modelserves_by_job: kopf.Index,
    **_: Any,
) -> None:
    """Wake the ModelServes that use this FineTuneJob's adapter when its phase changes (or it goes away)."""
    ctx = _ctx(memo)
    uid = body["metadata"]["uid"]
    phase = "Deleted" if event.get("type") == "DELETED" else (body.get("status") or {}).get("phase", "")
    if ctx.seen_ftj_phase.get(uid) == phase:
        return
    ctx.seen_ftj_phase[uid] = phase
    if phase == "Deleted":
        ctx.seen_ftj_phase.pop(uid, None)
        ctx.finetunejobs.forget(dict(body))
    for serve in modelserves_by_job.get((namespace, name), []):
        ctx.modelserves.reconcile(namespace, serve)


# ---- ModelServe --------------------------------------------------------------------------------
@kopf.on.create(*MSV, registry=REGISTRY, backoff=RETRY_SECONDS)
def modelserve_created(body: kopf.Body, name: str, namespace: str, memo: Any, **_: Any) -> None:
    _ctx(memo).modelserves.reconcile(namespace, name, body=dict(body))


@kopf.on.resume(*MSV, registry=REGISTRY, backoff=RETRY_SECONDS)
@kopf.on.update(*MSV, field="spec", registry=REGISTRY, backoff=RETRY_SECONDS)
def modelserve_changed(name: str, namespace: str, memo: Any, **_: Any) -> None:
    _ctx(memo).modelserves.reconcile(namespace, name)


@kopf.on.event(*MSV, registry=REGISTRY)
def modelserve_deleted(event: kopf.RawEvent, body: kopf.Body, memo: Any, **_: Any) -> None:
    """Forget a deleted ModelServe. Its DELETED event, not kopf.on.delete: kopf calls delete handlers only while its
    own finalizer holds the object, and no handler puts one there."""
    if event.get("type") == "DELETED":
        _ctx(memo).modelserves.forget(dict(body))


@kopf.on.event("apps", "v1", "deployments", labels=OWNED_BY_MSV, registry=REGISTRY)
@kopf.on.event("", "v1", "services", labels=OWNED_BY_MSV, registry=REGISTRY)
def server_child_changed(body: kopf.Body, namespace: str, memo: Any, **_: Any) -> None:
    """Follow the Deployment's rollout and repair drift of the Deployment or Service."""
    owners = [
        ref["name"] for ref in body.get("metadata", {}).get("ownerReferences", []) if ref.get("kind") == "ModelServe"
    ]
    if owners:
        _ctx(memo).modelserves.reconcile(namespace, owners[0])
