"""Metrics, liveness and the `kubetune operator` command, against the real control plane as the operator's
ServiceAccount."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
from kubetune.operator.settings import OperatorSettings

from tests.support.envtest.fixtures import OPERATOR_USER, RealCluster, RealOperatorControl
from tests.support.kube.server import FTJ, JOBS, KubeTestClient

from .helpers import exists, finetunejob, operator_requests, wait_phase


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_http(url: str, timeout: float = 30) -> httpx.Response:
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


def _wait_sample(url: str, name: str, at_least: float, timeout: float = 30, **labels: str) -> str:
    """The metrics text once `name{labels}` reached `at_least` (counters are bumped just after the status write a
    test sees)."""
    deadline = time.monotonic() + timeout
    while (_sample(text := _wait_http(url).text, name, **labels) or 0) < at_least:
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}{labels} stayed below {at_least} for {timeout} s:\n{text}")
        time.sleep(0.05)
    return text


def test_metrics_and_liveness(
    control_plane: RealCluster, kube: KubeTestClient, kubelet, ns: str, operator_settings: OperatorSettings
):
    metrics_port, liveness_port = free_port(), free_port()
    settings = operator_settings.model_copy(
        update={"metrics_port": metrics_port, "liveness_endpoint": f"http://127.0.0.1:{liveness_port}/healthz"}
    )
    control = RealOperatorControl(control_plane, settings)
    control.start()
    try:
        _wait_http(f"http://127.0.0.1:{liveness_port}/healthz")
        kube.create(FTJ, ns, finetunejob(ns))
        kube.wait_for(JOBS, ns, "sentiment-train", exists)
        kubelet.start_job(ns, "sentiment-train")
        wait_phase(kube, ns, "sentiment", "Running")
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        text = _wait_sample(url, "kubetune_reconciles_total", 2, kind="FineTuneJob", outcome="success")
        text = _wait_sample(url, "kubetune_finetunejobs", 1, phase="Running")
        assert _sample(text, "kubetune_finetunejobs", phase="Pending") == 0
        assert _sample(text, "kubetune_reconcile_duration_seconds_count", kind="FineTuneJob") >= 2
    finally:
        control.stop()
    assert control.refused() == []


@pytest.mark.timeout(120)
def test_kubetune_operator_command_runs_the_operator(control_plane: RealCluster, kube: KubeTestClient, ns: str):
    """The CLI entry point, as a process, with the ServiceAccount's kubeconfig (a token: RBAC applies)."""
    assert control_plane.operator_kubeconfig is not None
    since = control_plane.audit.offset()
    liveness_port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(control_plane.operator_kubeconfig),
        "KUBETUNE_METRICS_PORT": "0",
        "KUBETUNE_LIVENESS_ENDPOINT": f"http://127.0.0.1:{liveness_port}/healthz",
        "KUBETUNE_TRAINER_IMAGE": "example.org/trainer:cli",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "kubetune.cli", "operator", "--namespace", ns],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_http(f"http://127.0.0.1:{liveness_port}/healthz", timeout=60)
        kube.create(FTJ, ns, finetunejob(ns))
        job = kube.wait_for(JOBS, ns, "sentiment-train", exists, timeout=30)
        assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "example.org/trainer:cli"
        wait_phase(kube, ns, "sentiment", "Pending")
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert "Traceback" not in output, output[-3000:]
    created = operator_requests(control_plane, since, "create", "jobs")
    assert [(e.namespace, e.name, e.code) for e in created] == [(ns, "sentiment-train", 201)]
    assert control_plane.audit.refused(OPERATOR_USER, since) == []
