"""pytest fixtures for operator tests: mock cluster, operator thread, kubelet, request record.

Other test packages reuse them with `from tests.support.kube.fixtures import *` in their conftest.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import kopf
import pytest
from kubetune.operator.runner import OperatorThread
from kubetune.operator.settings import OperatorSettings

from .kubelet import KUBELET_AGENT, Kubelet
from .server import KubeTestClient, MockCluster


@pytest.fixture
def cluster() -> Iterator[MockCluster]:
    """A fresh mock API server; the test fails if the operator sent an invalid manifest."""
    with MockCluster() as mock:
        yield mock
    if mock.validator is not None and mock.validator.errors:
        pytest.fail("the operator sent invalid manifests:\n" + "\n".join(mock.validator.errors))


@pytest.fixture
def kubeconfig(cluster: MockCluster, tmp_path: Path) -> Path:
    return cluster.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def operator_settings(kubeconfig: Path) -> OperatorSettings:
    return OperatorSettings(
        kubeconfig=str(kubeconfig),
        metrics_port=0,
        liveness_endpoint="",
        resync=False,  # kopf's timers delay a stop by 5 s; the scenarios wait on events, never on resyncs
        trainer_image="kubetune/trainer:test",
        server_image="kubetune/server:test",
    )


OPERATOR_WATCHES = {"finetunejobs", "modelserves", "jobs", "deployments", "services"}


def quick_exit(settings: kopf.OperatorSettings) -> None:
    """Tests stop the operator often: on exit kopf waits up to 5 s for per-object workers, which idle
    that long before they end; shorter idling makes a stop take well under a second."""
    settings.queueing.idle_timeout = 0.3
    settings.queueing.exit_timeout = 0.5


class OperatorControl:
    """Start, stop and restart the operator (kill the thread, start a new one) within a test."""

    def __init__(self, settings: OperatorSettings, cluster: MockCluster) -> None:
        self.settings, self.cluster = settings, cluster
        self.current: OperatorThread | None = None

    def start(self, timeout: float = 20) -> OperatorThread:
        """Start and wait until kopf watches everything it serves (so no test races its startup)."""
        already = len(self.cluster.recorder.calls)
        self.current = OperatorThread(self.settings, quick_exit).start()
        deadline = time.monotonic() + timeout
        while True:
            watched = {call.resource for call in self.cluster.recorder.calls[already:] if call.verb == "watch"}
            if watched >= OPERATOR_WATCHES:
                return self.current
            if time.monotonic() > deadline:
                raise RuntimeError(f"the operator watches only {sorted(watched)} after {timeout} s")
            time.sleep(0.01)

    def stop(self) -> None:
        if self.current is not None:
            self.current.stop()
            self.current = None

    def restart(self) -> OperatorThread:
        self.stop()
        return self.start()


@pytest.fixture
def operator(operator_settings: OperatorSettings, cluster: MockCluster) -> Iterator[OperatorControl]:
    control = OperatorControl(operator_settings, cluster)
    control.start()
    yield control
    control.stop()


@pytest.fixture
def kube(cluster: MockCluster) -> Iterator[KubeTestClient]:
    client = cluster.client()
    yield client
    client.close()


@pytest.fixture
def kubelet(cluster: MockCluster) -> Iterator[Kubelet]:
    client = cluster.client(KUBELET_AGENT)
    yield Kubelet(client)
    client.close()
