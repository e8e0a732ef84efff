"""Run the operator: build the shared context, hand it to kopf, stop cleanly (CLI and tests use this)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import kopf

from .handlers import REGISTRY
from .kube import Kube, load_configuration
from .metrics import OperatorMetrics
from .services import OperatorContext
from .settings import OperatorSettings


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
