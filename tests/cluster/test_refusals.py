"""A child the real API server refuses for good reaches the FineTuneJob's status, with the server's message and an
Event, and is retried with a growing delay instead of every few seconds forever.

The refusal is provoked on purpose with a ResourceQuota allowing no Job (403 from quota admission). These tests run
their own operator (not the `operator` fixture, which fails a test on any 403) and check that the 403s are
exactly the provoked ones; test_rbac_audit.py leaves refusals of the quota named PROVOKED_QUOTA out of its proof."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest
from kubetune.operator import services

from tests.support.envtest.fixtures import RealCluster, RealOperatorControl
from tests.support.kube.server import FTJ, JOBS, KubeTestClient

from .helpers import condition, exists, finetunejob, operator_requests, wait_event, wait_until

TIMEOUT = 30  # generous for a loaded 2-core box; every wait returns as soon as its condition holds
PROVOKED_QUOTA = "kubetune-test-no-jobs"
QUOTAS = ("v1", "resourcequotas")
NO_JOBS = {"count/jobs.batch": "0"}


@pytest.fixture
def control(control_plane: RealCluster, operator_settings, monkeypatch) -> Iterator[RealOperatorControl]:
    """The operator, retrying refusals from 1 s (doubling) so a few retries fit in seconds."""
    monkeypatch.setattr(services, "RETRY_MIN", 1.0)
    control = RealOperatorControl(control_plane, operator_settings)
    control.start()
    try:
        yield control
    finally:
        control.stop()


def refuse_jobs(kube: KubeTestClient, ns: str) -> None:
    """A quota of zero Jobs, with the status the quota controller (not run here) would write, so admission
    refuses every Job create with `exceeded quota`."""
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": PROVOKED_QUOTA},
        "spec": {"hard": NO_JOBS},
    }
    kube.create(QUOTAS, ns, quota)
    kube.patch(QUOTAS, ns, PROVOKED_QUOTA, {"status": {"hard": NO_JOBS, "used": NO_JOBS}}, "status")


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
    refuse_jobs(kube, ns)
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
    assert gaps[1] > 1.5 * gaps[0] and gaps[2] > 1.5 * gaps[1], f"retry gaps {gaps} do not grow"

    kube.delete(QUOTAS, ns, PROVOKED_QUOTA)
    kube.wait_for(JOBS, ns, "sentiment-train", exists, TIMEOUT)
    wait_until(
        lambda: (condition(kube.get(FTJ, ns, "sentiment"), "JobCreated") or {}).get("status") == "True",
        "for JobCreated=True once the quota is gone",
        TIMEOUT,
    )
    refused = control.refused()
    assert refused and all(f"exceeded quota: {PROVOKED_QUOTA}" in line and " create " in line for line in refused), (
        refused
    )
