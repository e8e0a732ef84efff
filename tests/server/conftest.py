"""Fixtures for the server tests: a tiny base model, two trained adapters, and a real uvicorn on loopback."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import torch

from tests.server.lora_factory import train_fact_adapter
from tests.support.tiny_model import build_tiny_model

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def pvc_root(tmp_path_factory) -> Path:
    """A claim root laid out as in a pod: claim 'models' holds the base, claim 'adapters' the trained adapters."""
    root = tmp_path_factory.mktemp("pvc")
    base = build_tiny_model(root / "models" / "base")
    train_fact_adapter(base, root / "adapters" / "facts-a", seed=0)
    train_fact_adapter(base, root / "adapters" / "facts-b", seed=1)
    foreign = root / "adapters" / "foreign"
    shutil.copytree(root / "adapters" / "facts-a", foreign)
    config = json.loads((foreign / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "other-org/other-model"
    (foreign / "adapter_config.json").write_text(json.dumps(config))
    return root


def serve_config(adapters: dict[str, str], **extra) -> dict:
    """A serve.json body (camelCase) with the tiny base on claim 'models' and adapters by name -> folder."""
    generation = {"maxNewTokens": 16, "maxNewTokensLimit": 64, "maxPromptTokens": 256, "maxBatchSize": 32}
    generation.update(extra.pop("generation", {}))
    return {
        "baseModel": {"pvc": {"claimName": "models", "path": "base"}},
        "adapters": [{"name": name, "pvc": {"claimName": "adapters", "path": path}} for name, path in adapters.items()],
        "generation": generation,
        **extra,
    }


def write_serve_config(path: Path, body: dict) -> Path:
    """Write like kubelet does: a new file swapped in, so readers never see half a file."""
    staging = path.with_suffix(".tmp")
    staging.write_text(json.dumps(body))
    staging.replace(path)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def live_server(config_path: Path, pvc_root: Path, api_key: str | None = None, engine=None, wait_ready: bool = True):
    """Run the real app under uvicorn on 127.0.0.1 in a thread; yields (base_url, app)."""
    import uvicorn
    from kubetune_server.app import create_app
    from kubetune_server.config_watch import read_serve_config
    from kubetune_server.engine import Engine
    from kubetune_server.settings import ServerSettings

    port = free_port()
    settings = ServerSettings(
        config_path=str(config_path),
        api_key=api_key,
        host="127.0.0.1",
        port=port,
        pvc_root=str(pvc_root),
        max_body_bytes=64 * 1024,
        watch_interval_s=0.2,
        drain_timeout_s=10,
    )
    engine = engine or Engine(read_serve_config(str(config_path)), pvc_root=str(pvc_root), device="cpu")
    app = create_app(settings, engine)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=10)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            status = httpx.get(f"{url}/ready" if wait_ready else f"{url}/health", timeout=2).status_code
            if status == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("the test server did not become ready")
        time.sleep(0.05)
    try:
        yield url, app
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="module")
def server(pvc_root, tmp_path_factory):
    """One server with the base and both adapters ('facts-a', 'facts-b'), shared by a test module."""
    config_path = write_serve_config(
        tmp_path_factory.mktemp("cfg") / "serve.json", serve_config({"facts-a": "facts-a", "facts-b": "facts-b"})
    )
    with live_server(config_path, pvc_root) as (url, app):
        yield url, app
