"""The FastAPI application factory. Nothing is built at import time: `create_app(settings, engine)` does it."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from kubetune import __version__

from .body_limit import BodySizeLimit
from .config_watch import ConfigWatcher
from .engine import Engine
from .http_errors import install_error_handlers
from .metrics import ServerMetrics
from .routes import openai_router, probes_router
from .serving import Serving
from .settings import ServerSettings

log = logging.getLogger(__name__)

KNOWN_ROUTES = (
    "/v1/models",
    "/v1/completions",
    "/v1/chat/completions",
    "/generate",
    "/health",
    "/ready",
    "/adapters",
    "/metrics",
)


class RequestMetrics:
    """ASGI middleware counting requests by route and status, and timing them until the last byte is sent."""

    def __init__(self, app, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = next((r for r in KNOWN_ROUTES if path == r or path.startswith(r + "/")), "other")
        status = 500
        started = time.monotonic()

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.monotonic() - started)


def _load_in_background(engine: Engine, on_ready: Callable[[], None], on_failure: Callable[[Exception], None]):
    def run() -> None:
        try:
            if not engine.ready:
                engine.load()
            engine.start()
        except Exception as exc:
            engine.load_error = f"loading failed: {exc}"
            log.error("%s", engine.load_error)
            on_failure(exc)
            return
        on_ready()

    thread = threading.Thread(target=run, name="kubetune-load", daemon=True)
    thread.start()
    return thread


def create_app(
    settings: ServerSettings,
    engine: Engine,
    on_load_failure: Callable[[Exception], None] | None = None,
    watch_config: bool = True,
) -> FastAPI:
    """The server app; its lifespan loads the engine in the background (/ready says when), watches serve.json,
    and on shutdown stops the watcher and lets the engine drain what is still running."""
    metrics = ServerMetrics()
    engine.on_step = metrics.observe_step
    engine.on_occupancy = metrics.observe_occupancy
    serving = Serving(engine, metrics)
    watcher = ConfigWatcher(engine, settings.config_path, settings.watch_interval_s) if watch_config else None

    if getattr(engine, "name", "") == "vllm":
        from prometheus_client import REGISTRY

        metrics.extra_registries.append(REGISTRY)  # vLLM's own metrics (vllm:*) next to kubetune's

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        attach = getattr(engine, "attach_loop", None)
        if attach is not None:
            attach(asyncio.get_running_loop())
        loader = _load_in_background(
            engine, on_ready=watcher.start if watcher else lambda: None, on_failure=on_load_failure or (lambda _: None)
        )
        try:
            yield
        finally:
            if watcher is not None:
                watcher.stop()
            await asyncio.to_thread(loader.join, settings.drain_timeout_s)
            await asyncio.to_thread(engine.stop, settings.drain_timeout_s)

    app = FastAPI(
        title="kubetune server",
        description="OpenAI-compatible serving of a base model with LoRA adapters",
        version=__version__,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(openai_router(serving, settings.api_key))
    app.include_router(probes_router(serving, metrics))
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.state.serving = serving
    app.state.metrics = metrics
    app.state.watcher = watcher
    return app
