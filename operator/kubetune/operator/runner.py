"""Run the operator: build the shared context, hand it to kopf, stop cleanly (CLI and tests use this)."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kopf
import kubernetes
from kubernetes.client.rest import ApiException

from . import kube as k8s
from . import naming
from .handlers import REGISTRY, RESYNC_SECONDS
from .kube import Kube, load_configuration
from .leader import LeaderElector
from .metrics import OperatorMetrics
from .services import OperatorContext
from .settings import OperatorSettings

log = logging.getLogger(__name__)
PEERING_GROUP, PEERING_VERSION = "kopf.dev", "v1"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class LeadershipLost(RuntimeError):
    """The Lease was not renewed in time: another replica may lead now, so this process must stop acting."""


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


def resync_once(ctx: OperatorContext) -> None:
    """Safety net for lost events (kopf does not retry event handlers): reconcile every unfinished FineTuneJob
    and every ModelServe (repairs drift of the unwatched ConfigMap too). One LIST per kind and namespace instead
    of kopf timers, which would put a finalizer on every object."""
    for namespace in ctx.settings.watch_namespaces or (None,):
        for res, service in ((k8s.FINETUNEJOBS, ctx.finetunejobs), (k8s.MODELSERVES, ctx.modelserves)):
            for body in ctx.kube.list(res, namespace):
                meta = body["metadata"]
                finished = (body.get("status") or {}).get("phase") in ("Succeeded", "Failed")
                if meta.get("deletionTimestamp") or (res is k8s.FINETUNEJOBS and finished):
                    continue
                try:
                    service.reconcile(meta["namespace"], meta["name"])
                except Exception:  # one broken object must not stop the pass
                    log.exception("resync of %s %s/%s failed", res.kind, meta["namespace"], meta["name"])


async def _resync_forever(ctx: OperatorContext, interval: float = RESYNC_SECONDS) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(resync_once, ctx)
        except Exception:  # the API server may be briefly away; the next pass retries
            log.exception("resync pass failed")


async def operate(
    settings: OperatorSettings,
    ctx: OperatorContext | None = None,
    ready_flag: Any = None,
    stop_flag: Any = None,
) -> None:
    """Run until `stop_flag` is set (or forever); the caller's loop is kopf's loop."""
    ctx = ctx or build_context(settings)
    resync = asyncio.create_task(_resync_forever(ctx)) if settings.resync else None
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
        if resync is not None:
            resync.cancel()
        ctx.stop_rechecks()
        ctx.kube.close()


def lease_namespace(settings: OperatorSettings) -> str:
    """The Lease lives with the operator: the setting, else the pod's namespace, else `kubetune`."""
    if settings.leader_election_namespace:
        return settings.leader_election_namespace
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "kubetune"
    except OSError:
        return "kubetune"


def elector_for(settings: OperatorSettings, api: kubernetes.client.ApiClient) -> LeaderElector:
    """client-go's timing scaled to the lease: 15 s lease, renew deadline 10 s, retry every 2 s by default."""
    lease = float(settings.leader_election_lease_seconds)
    identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
    return LeaderElector(
        api,
        lease_namespace(settings),
        settings.leader_election_name,
        identity,
        lease_duration=lease,
        renew_deadline=lease * 2 / 3,
        retry_period=lease / 7.5,
    )


@contextlib.contextmanager
def follower_liveness(endpoint: str) -> Iterator[None]:
    """While a replica waits for the Lease, answer the liveness probe on kopf's endpoint (kopf serves it only once
    it runs): otherwise the kubelet would restart every follower after the probe's failure threshold."""
    if not endpoint:
        yield
        return
    url = urlsplit(endpoint)
    path = url.path or "/"

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path.split("?")[0] == path else 404)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *_: Any) -> None:
            """Probes every 15 s are not worth a log line."""

    server = http.server.ThreadingHTTPServer((url.hostname or "0.0.0.0", url.port or 80), Health)
    thread = threading.Thread(target=server.serve_forever, name="kubetune-follower-health", daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()  # kopf binds the same port next


def lead(settings: OperatorSettings, stop: threading.Event | None = None, ready_flag: Any = None) -> None:
    """Wait for the Lease, then run kopf standalone while renewing it. A clean stop (`stop`, SIGTERM) releases
    the Lease so a successor starts at once; a lost Lease stops kopf and raises LeadershipLost (the process
    exits and Kubernetes restarts it as a follower)."""
    stop = stop or threading.Event()
    settings = settings.model_copy(update={"peering": ""})
    ctx = build_context(settings)
    elector = elector_for(settings, ctx.kube.client)
    with follower_liveness(settings.liveness_endpoint):
        acquired = elector.acquire(stop)
    if not acquired:
        ctx.kube.close()
        return
    kopf_stop, done, lost = threading.Event(), threading.Event(), threading.Event()

    def renew() -> None:
        if not elector.keep(done):
            lost.set()
            kopf_stop.set()

    def relay_stop() -> None:
        while not done.is_set():
            if stop.wait(0.5):
                kopf_stop.set()
                return

    threading.Thread(target=renew, name="kubetune-lease", daemon=True).start()
    threading.Thread(target=relay_stop, name="kubetune-stop", daemon=True).start()

    async def operate_until_stopped() -> None:
        try:
            await operate(settings, ctx, ready_flag, kopf_stop)
        finally:  # kopf stopped on its own (SIGTERM): free its thread that waits on the flag, or asyncio.run hangs
            kopf_stop.set()

    try:
        asyncio.run(operate_until_stopped())
    finally:
        done.set()
    if lost.is_set():
        raise LeadershipLost(f"lost the lease {elector.namespace}/{elector.name}")
    elector.release()


def run(settings: OperatorSettings) -> None:
    """Blocking entry point for `kubetune operator`."""
    if settings.leader_election:
        lead(settings)
    else:
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
