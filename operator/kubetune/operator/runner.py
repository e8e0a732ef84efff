"""Run the operator: build the shared context, hand it to kopf, stop cleanly (CLI and tests use this)."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import kopf
import kubernetes
from kubernetes.client.rest import ApiException

from . import naming
from .handlers import REGISTRY
from .kube import Kube, load_configuration
from .metrics import OperatorMetrics
from .services import OperatorContext
from .settings import OperatorSettings

log = logging.getLogger(__name__)
PEERING_GROUP, PEERING_VERSION = "kopf.dev", "v1"


def ensure_peering(settings: OperatorSettings, api: kubernetes.client.ApiClient) -> None:
    """Create the kopf peering object(s) the operator joins, when missing: the ClusterKopfPeering named
    KUBETUNE_PEERING, or a KopfPeering of that name in each watched namespace.

    Peering is mandatory (`peering_name=`): kopf stays paused until the object exists. The install cannot ship it:
    one `kubectl apply -k` fails on it, since kubectl maps every kind before it creates anything and the kopf.dev
    kinds are unknown until their CRDs, in the same apply, exist. So the operator creates it before kopf starts
    (needs `create` on [cluster]kopfpeerings). The guard keeps working: every operator with the same peering name
    joins the same object (a second one finds it existing, 409) and sees the others. When it cannot be created
    (no such CRD, no `create` right), kopf pauses as before and the warning says why."""
    if not settings.peering:
        return
    objects = kubernetes.client.CustomObjectsApi(api)
    labels = {
        naming.LABEL_NAME: "kubetune",
        naming.LABEL_COMPONENT: "operator",
        naming.LABEL_MANAGED_BY: naming.MANAGED_BY,
    }
    kind = "KopfPeering" if settings.watch_namespaces else "ClusterKopfPeering"
    body = {
        "apiVersion": f"{PEERING_GROUP}/{PEERING_VERSION}",
        "kind": kind,
        "metadata": {"name": settings.peering, "labels": labels},
    }
    for namespace in settings.watch_namespaces or (None,):
        where = f"in namespace {namespace}" if namespace else "cluster-wide"
        try:
            if namespace:
                objects.create_namespaced_custom_object(
                    PEERING_GROUP, PEERING_VERSION, namespace, "kopfpeerings", body, _request_timeout=30
                )
            else:
                objects.create_cluster_custom_object(
                    PEERING_GROUP, PEERING_VERSION, "clusterkopfpeerings", body, _request_timeout=30
                )
            log.info("created the %s %r %s", kind, settings.peering, where)
        except ApiException as exc:
            if exc.status == 409:
                continue
            if exc.status not in (403, 404):
                raise
            log.warning(
                "cannot create the %s %r %s (%s %s); the operator stays paused until it exists",
                kind,
                settings.peering,
                where,
                exc.status,
                exc.reason,
            )


def build_context(settings: OperatorSettings) -> OperatorContext:
    return OperatorContext(settings, Kube(load_configuration(settings.kubeconfig)), OperatorMetrics())


async def operate(
    settings: OperatorSettings,
    ctx: OperatorContext | None = None,
    ready_flag: Any = None,
    stop_flag: Any = None,
) -> None:
    """Run until `stop_flag` is set (or forever); the caller's loop is kopf's loop."""
    ctx = ctx or build_context(settings)
    try:
        await asyncio.to_thread(ensure_peering, settings, ctx.kube.client)
        await kopf.operator(
            registry=REGISTRY,
            memo=kopf.Memo(ctx=ctx),
            clusterwide=not settings.watch_namespaces,
            namespaces=list(settings.watch_namespaces),
            standalone=not settings.peering,
            peering_name=settings.peering or None,
            liveness_endpoint=settings.liveness_endpoint or None,
            ready_flag=ready_flag,
            stop_flag=stop_flag,
        )
    finally:
        ctx.kube.close()


def run(settings: OperatorSettings) -> None:
    """Blocking entry point for `kubetune operator`."""
    asyncio.run(operate(settings))


class OperatorThread:
    """The operator in its own thread and event loop (tests, the benchmark, the local runner)."""

    def __init__(self, settings: OperatorSettings, kopf_tuning: Any = None) -> None:
        self.settings = settings
        self.ctx = build_context(settings)
        self.ctx.kopf_tuning = kopf_tuning
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kubetune-operator", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(operate(self.settings, self.ctx, self._ready, self._stop))
        except BaseException as exc:  # surfaced to the caller by start()/stop()
            self.error = exc
            self._ready.set()

    def start(self, timeout: float = 20) -> OperatorThread:
        self._thread.start()
        if not self._ready.wait(timeout) or self.error is not None:
            raise RuntimeError(f"the operator did not start: {self.error!r}")
        return self

    def stop(self, timeout: float = 20) -> None:
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError("the operator thread did not stop in time")
