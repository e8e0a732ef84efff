"""A child the real API server refuses for good reaches the FineTuneJob's or ModelServe's status, with the
server's message and an Event, and is retried with a growing delay instead of every few seconds forever.

The refusal is provoked on purpose with a ResourceQuota allowing no Job, or no Deployment (403 from quota
admission). These tests run their own operator (not the `operator` fixture, which fails a test on any 403) and
check that the 403s are exactly the provoked ones; test_rbac_audit.py leaves refusals of the quota named
PROVOKED_QUOTA out of its proof."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest
from kubetune.operator import services

from tests.support.envtest.fixtures import RealCluster, RealOperatorControl
from tests.support.envtest.kubelet import FakeKubelet
from tests.support.kube.server import DEPLOYMENTS, FTJ, JOBS, MSV, KubeTestClient

from .helpers import (
    condition,
    exists,
    finetunejob,
    modelserve,
    operator_requests,
    wait_event,
    wait_phase,
    wait_until,
)

TIMEOUT = 30  # generous for a loaded 2-core box; every wait returns as soon as its condition holds
PROVOKED_QUOTA = "kubetune-test-refuses"
QUOTAS = ("v1", "resourcequotas")
NO_JOBS = {"count/jobs.batch": "0"}
NO_DEPLOYMENTS = {"count/deployments.apps": "0"}


@pytest.fixture
def control(control_plane: RealCluster, operator_settings, monkeypatch) -> Iterator[RealOperatorControl]:
    """The operator, retrying refusals after 1, 2, 4, 4... s (not 5 s doubling up to 5 minutes), so a few
    retries, and the one after the quota goes, fit in seconds."""
    monkeypatch.setattr(services, "RETRY_MIN", 1.0)
    monkeypatch.setattr(services, "RETRY_MAX", 4.0)
    control = RealOperatorControl(control_plane, operator_settings)
    control.start()
    try:
        yield control
    finally:
        control.stop()


def refuse(kube: KubeTestClient, ns: str, hard: dict[str, str]) -> None:
    """A quota of zero such objects, with the status the quota controller (not run here) would write, so
    admission refuses every create of them with `exceeded quota`."""
    metadata = {"name": PROVOKED_QUOTA}
    kube.create(QUOTAS, ns, {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": metadata, "spec": {"hard": hard}})
    kube.patch(QUOTAS, ns, PROVOKED_QUOTA, {"status": {"hard": hard, "used": hard}}, "status")


def only_provoked(control: RealOperatorControl) -> None:
    """The operator was refused something, and only creates, only by the provoked quota."""
    refused = control.refused()
    assert refused and all(f"exceeded quota: {PROVOKED_QUOTA}" in line and " create " in line for line in refused), (
        refused
    )


def attempt_times(cluster: RealCluster, since: int, count: int) -> list[float]:
    """When each of the operator's first `count` Job creates after `since` was seen (polled at 20 ms)."""
    seen: list[float] = []
    deadline = time.monotonic() + TIMEOUT
    while len(seen) < count:
        attempts = len(operator_requests(cluster, since, "create", "jobs"))
        seen.extend([time.monotonic()] * (attempts - len(seen)))
        assert time.monotonic() < deadline, f"only {len(seen)} Job creates within {TIMEOUT} s"
        time.sleep(0.02)
    return seen[:count]


def test_a_job_refused_by_a_quota_shows_on_the_finetunejob_and_retries_back_off(
    control_plane: RealCluster, control: RealOperatorControl, kube: KubeTestClient, ns: str
):
    refuse(kube, ns, NO_JOBS)
    since = control_plane.audit.offset()
    kube.create(FTJ, ns, finetunejob(ns))

    created = wait_until(
        lambda: condition(kube.get(FTJ, ns, "sentiment"), "JobCreated"), "for a JobCreated condition", TIMEOUT
    )
    assert created["status"] == "False" and created["reason"] == "ChildRefused"
    assert "Job/sentiment-train" in created["message"] and f"exceeded quota: {PROVOKED_QUOTA}" in created["message"]
    assert kube.get(FTJ, ns, "sentiment")["status"]["phase"] == "Pending"
    wait_event(kube, ns, "sentiment", "ChildRefused")

    times = attempt_times(control_plane, since, 4)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    # The delays double from RETRY_MIN (1, 2, 4 s): each gap is at least its delay (a loaded machine only adds
    # to a gap, so lower bounds hold anywhere), and the last is clearly longer than the first.
    assert all(gap >= 0.9 * delay for gap, delay in zip(gaps, (1.0, 2.0, 4.0), strict=True)), f"retry gaps {gaps}"
    assert gaps[2] > 2 * gaps[0], f"retry gaps {gaps} do not grow"

    kube.delete(QUOTAS, ns, PROVOKED_QUOTA)
    kube.wait_for(JOBS, ns, "sentiment-train", exists, TIMEOUT)
    wait_until(
        lambda: (condition(kube.get(FTJ, ns, "sentiment"), "JobCreated") or {}).get("status") == "True",
        "for JobCreated=True once the quota is gone",
        TIMEOUT,
    )
    only_provoked(control)


def test_a_deployment_refused_by_a_quota_shows_on_the_modelserve(
    control_plane: RealCluster, control: RealOperatorControl, kube: KubeTestClient, kubelet: FakeKubelet, ns: str
):
    kube.create(FTJ, ns, finetunejob(ns))
    kube.wait_for(JOBS, ns, "sentiment-train", exists, TIMEOUT)
    kubelet.start_job(ns, "sentiment-train")
    kubelet.finish_job(ns, "sentiment-train", 0, "{}")
    wait_phase(kube, ns, "sentiment", "Succeeded")
    refuse(kube, ns, NO_DEPLOYMENTS)

    kube.create(MSV, ns, modelserve(ns))
    ready = wait_until(
        lambda: (
            (condition(kube.get(MSV, ns, "chat"), "Ready") or {}).get("reason") == "ChildRefused"
            and condition(kube.get(MSV, ns, "chat"), "Ready")
        ),
        "for Ready=False/ChildRefused",
        TIMEOUT,
    )
    assert ready["status"] == "False" and "Deployment/chat" in ready["message"]
    assert f"exceeded quota: {PROVOKED_QUOTA}" in ready["message"]
    wait_event(kube, ns, "chat", "ChildRefused")
    assert kube.find(DEPLOYMENTS, ns, "chat") is None

    kube.delete(QUOTAS, ns, PROVOKED_QUOTA)
    kube.wait_for(DEPLOYMENTS, ns, "chat", exists, TIMEOUT)
    only_provoked(control)
