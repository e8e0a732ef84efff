"""Prometheus metrics of one operator instance (its own registry, so tests can run several in turn)."""

from __future__ import annotations

import threading
from collections import Counter as Tally

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

PHASES = {
    "FineTuneJob": ("Pending", "Running", "Succeeded", "Failed", "Suspended"),
    "ModelServe": ("Pending", "WaitingForAdapters", "Deploying", "Ready", "Failed"),
}


class OperatorMetrics:
    """Reconciles by kind and outcome, reconcile latency, and objects by phase."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconciles = Counter(
            "kubetune_reconciles", "Reconciles by kind and outcome", ["kind", "outcome"], registry=self.registry
        )
        self.latency = Histogram(
            "kubetune_reconcile_duration_seconds",
            "Reconcile latency by kind",
            ["kind"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.jobs = Gauge("kubetune_finetunejobs", "FineTuneJobs by phase", ["phase"], registry=self.registry)
        self.serves = Gauge("kubetune_modelserves", "ModelServes by phase", ["phase"], registry=self.registry)
        self._phases: dict[str, dict[str, str]] = {"FineTuneJob": {}, "ModelServe": {}}
        self._lock = threading.Lock()
        self._server = None
        for kind, phases in PHASES.items():
            gauge = self.jobs if kind == "FineTuneJob" else self.serves
            for phase in phases:
                gauge.labels(phase).set(0)

    def observe(self, kind: str, outcome: str, seconds: float) -> None:
        self.reconciles.labels(kind, outcome).inc()
        self.latency.labels(kind).observe(seconds)

    def set_phase(self, kind: str, uid: str, phase: str | None) -> None:
        """Record an object's phase (None forgets a deleted object) and refresh the by-phase gauge."""
        with self._lock:
            phases = self._phases[kind]
            if phase is None:
                phases.pop(uid, None)
            else:
                phases[uid] = phase
            counts = Tally(phases.values())
            gauge = self.jobs if kind == "FineTuneJob" else self.serves
            for name in set(PHASES[kind]) | set(counts):
                gauge.labels(name).set(counts.get(name, 0))

    def serve(self, port: int) -> None:
        """Expose /metrics on `port` (0 leaves it off)."""
        if port:
            self._server, _ = start_http_server(port, registry=self.registry)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
