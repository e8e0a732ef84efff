"""Metrics, liveness and the `kubetune operator` command."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
from kubetune.operator.settings import OperatorSettings

from tests.support.kube.fixtures import OperatorControl
from tests.support.kube.server import FTJ, JOBS

from .helpers import NS, exists, finetunejob, wait_phase


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_http(url: str, timeout: float = 20) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return response
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer 200 within {timeout} s")
        time.sleep(0.05)


def _sample(text: str, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_and_liveness(cluster, kube, kubelet, operator_settings: OperatorSettings):
    metrics_port, liveness_port = free_port(), free_port()
    settings = operator_settings.model_copy(
        update={"metrics_port": metrics_port, "liveness_endpoint": f"http://127.0.0.1:{liveness_port}/healthz"}
    )
    control = OperatorControl(settings, cluster)
    control.start()
    try:
        _wait_http(f"http://127.0.0.1:{liveness_port}/healthz")
        kube.create(FTJ, NS, finetunejob())
        kube.wait_for(JOBS, NS, "sentiment-train", exists)
        kubelet.start_job(NS, "sentiment-train")
        wait_phase(kube, "sentiment", "Running")
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        deadline = time.monotonic() + 10  # the counter is bumped just after the status write the test saw
        while (
            _sample(text := _wait_http(url).text, "kubetune_reconciles_total", kind="FineTuneJob", outcome="success")
            or 0
        ) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _sample(text, "kubetune_reconciles_total", kind="FineTuneJob", outcome="success") >= 2
        assert _sample(text, "kubetune_finetunejobs", phase="Running") == 1
        assert _sample(text, "kubetune_finetunejobs", phase="Pending") == 0
        assert _sample(text, "kubetune_reconcile_duration_seconds_count", kind="FineTuneJob") >= 2
    finally:
        control.stop()


@pytest.mark.timeout(120)
def test_kubetune_operator_command_runs_the_operator(cluster, kube, kubeconfig):
    liveness_port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "KUBETUNE_METRICS_PORT": "0",
        "KUBETUNE_LIVENESS_ENDPOINT": f"http://127.0.0.1:{liveness_port}/healthz",
        "KUBETUNE_TRAINER_IMAGE": "example.org/trainer:cli",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "kubetune.cli", "operator", "--namespace", NS],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_http(f"http://127.0.0.1:{liveness_port}/healthz", timeout=60)
        kube.create(FTJ, NS, finetunejob())
        job = kube.wait_for(JOBS, NS, "sentiment-train", exists, timeout=30)
        assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "example.org/trainer:cli"
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert "Traceback" not in output, output[-3000:]
