"""Prometheus metrics of one server (own registry, so several apps in one process do not collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServerMetrics:
    """Requests, tokens, latency, queue depth and batch size."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.extra_registries: list[CollectorRegistry] = []
        self.requests = Counter(
            "kubetune_requests", "HTTP requests answered", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "kubetune_request_latency_seconds",
            "Time from request to full response",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "kubetune_prompt_tokens", "Prompt tokens processed", ["model"], registry=self.registry
        )
        self.completion_tokens = Counter(
            "kubetune_completion_tokens", "Tokens generated", ["model"], registry=self.registry
        )
        self.queue_depth = Gauge("kubetune_queue_depth", "Sequences waiting for a batch slot", registry=self.registry)
        self.running = Gauge("kubetune_running_sequences", "Sequences decoding now", registry=self.registry)
        self.batch_size = Histogram(
            "kubetune_batch_size", "Rows per forward pass", buckets=BATCH_BUCKETS, registry=self.registry
        )

    def observe_step(self, rows: int) -> None:
        """Engine callback after every decode or final prefill pass (worker thread): rows that got a token."""
        self.batch_size.observe(rows)

    def observe_occupancy(self, running: int, waiting: int) -> None:
        """Engine callback whenever rows joined or left: after finished rows are gone, and once idle, so an
        autoscaler sees 0 running when nothing runs."""
        self.running.set(running)
        self.queue_depth.set(waiting)

    def count_tokens(self, model: str, prompt: int, completion: int) -> None:
        self.prompt_tokens.labels(model).inc(prompt)
        self.completion_tokens.labels(model).inc(completion)

    def render(self) -> bytes:
        return b"".join(generate_latest(registry) for registry in [self.registry, *self.extra_registries])
