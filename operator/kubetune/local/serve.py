"""Serve a ModelServe locally: build its serve.json from the local adapters and start the server image's entrypoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from kubetune.api import FineTuneJobStatus, ModelServe, ServeConfig
from kubetune.api.finetunejob import OutputStatus
from kubetune.api.runtime import ENV_HOST, ENV_PORT, ENV_SERVE_CONFIG, SERVE_CONFIG_FILE
from kubetune.operator.reconcile.modelserve import resolve_adapters, serve_config

from .documents import Bundle
from .train import TrainResult
from .volumes import LocalVolumes

READY_TIMEOUT_SECONDS = 600


class ServeFailed(RuntimeError):
    """The server could not be configured or did not become ready."""


def local_serve_config(serve: ModelServe, bundle: Bundle, trained: dict[str, TrainResult]) -> ServeConfig:
    """Resolve adapters exactly as the operator does, with the local runs standing for succeeded FineTuneJobs."""
    jobs: dict[str, dict] = {}
    for adapter in serve.spec.adapters:
        ref = adapter.fine_tune_job_ref
        if ref is None:
            continue
        job = bundle.job(ref.name)
        if job is None or ref.name not in trained:
            raise ServeFailed(
                f"ModelServe {serve.metadata.name}: adapter {adapter.name!r} refers to FineTuneJob {ref.name!r}, "
                "which is not in the given files"
            )
        output = OutputStatus(pvc=trained[ref.name].adapter, base_model=job.spec.base_model, method=job.spec.method)
        jobs[ref.name] = {"status": FineTuneJobStatus(phase="Succeeded", output=output).to_wire()}
    resolution = resolve_adapters(serve, jobs)
    if resolution.failed:
        raise ServeFailed(
            f"ModelServe {serve.metadata.name}: " + "; ".join(message for _, message in resolution.failed)
        )
    return serve_config(serve, resolution)


def start_server(
    config: ServeConfig, volumes: LocalVolumes, workdir: Path, port: int, env: dict[str, str], name: str
) -> subprocess.Popen:
    """Start `python -m kubetune_server` on 127.0.0.1:`port`; returns once /ready answers 200."""
    run_dir = workdir / "serve" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    config_file = run_dir / SERVE_CONFIG_FILE
    config_file.write_text(json.dumps(config.to_wire(), indent=2), encoding="utf-8")
    child_env = {
        **os.environ,
        **env,
        **volumes.env(),
        ENV_SERVE_CONFIG: str(config_file),
        ENV_HOST: "127.0.0.1",
        ENV_PORT: str(port),
    }
    log_file = run_dir / "server.log"
    log = log_file.open("ab")
    process = subprocess.Popen([sys.executable, "-m", "kubetune_server"], env=child_env, stdout=log, stderr=log)
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServeFailed(f"the server exited with code {process.returncode}; see {log_file}")
        if _ready(port):
            return process
        time.sleep(0.5)
    process.terminate()
    raise ServeFailed(f"the server was not ready after {READY_TIMEOUT_SECONDS} s; see {log_file}")


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def usage_hint(port: int, model: str) -> str:
    """How to call the local server: a curl line and an OpenAI client snippet."""
    return f"""
Call it with curl:
  curl -s http://127.0.0.1:{port}/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello"}}], "max_tokens": 32}}'
or with the OpenAI Python client:
  from openai import OpenAI
  client = OpenAI(base_url="http://127.0.0.1:{port}/v1", api_key="unused")
  reply = client.chat.completions.create(model="{model}", messages=[{{"role": "user", "content": "Hello"}}])
  print(reply.choices[0].message.content)
"""
