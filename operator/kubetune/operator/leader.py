"""Leader election on a coordination.k8s.io/v1 Lease, as client-go and controller-runtime do it.

Why: kopf's peering cannot run two replicas (equal priorities freeze both; a killed replica's successor waits for
the stale peering entry to expire, about a minute). With a Lease, one replica (the leader) runs kopf standalone and
the others wait; a leader that cannot renew within `renew_deadline` stops, and its process exits so Kubernetes
restarts it as a follower. A follower takes over once the record it observes has not changed for
`lease_duration` seconds, measured on its own clock (clocks of different nodes are never compared).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kubernetes
from kubernetes.client.rest import ApiException

log = logging.getLogger(__name__)


def _now_micro() -> datetime:
    return datetime.now(UTC)


@dataclass
class LeaderElector:
    """Acquire, renew and release one Lease for `identity` (the pod name)."""

    api: kubernetes.client.ApiClient
    namespace: str
    name: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    clock: Callable[[], float] = time.monotonic
    _observed: tuple[Any, ...] | None = field(default=None, init=False)
    _observed_at: float = field(default=0.0, init=False)

    @property
    def _leases(self) -> kubernetes.client.CoordinationV1Api:
        return kubernetes.client.CoordinationV1Api(self.api)

    def _spec(self, transitions: int, acquired: datetime | None) -> dict[str, Any]:
        now = _now_micro()
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.lease_duration),
            "acquireTime": acquired or now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    def try_acquire_or_renew(self) -> bool:
        """One attempt (client-go's tryAcquireOrRenew): True while this identity holds the Lease. Conflicts (another
        replica wrote first: 409 on create, or on update thanks to resourceVersion) are a plain 'no'."""
        try:
            lease = self._leases.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=self.retry_period * 2
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = {"metadata": {"name": self.name, "namespace": self.namespace}, "spec": self._spec(0, None)}
            return self._write(lambda: self._leases.create_namespaced_lease(self.namespace, body, _request_timeout=5))
        spec = lease.spec
        record = (spec.holder_identity, spec.renew_time, spec.lease_transitions, lease.metadata.resource_version)
        if record != self._observed:
            self._observed, self._observed_at = record, self.clock()
        holder = spec.holder_identity or ""
        duration = spec.lease_duration_seconds or self.lease_duration
        if holder and holder != self.identity and self.clock() < self._observed_at + duration:
            return False
        mine = holder == self.identity
        transitions = (spec.lease_transitions or 0) + (0 if mine else 1)
        lease.spec = self._spec(transitions, spec.acquire_time if mine else None)
        return self._write(
            lambda: self._leases.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=5)
        )

    def _write(self, call: Callable[[], Any]) -> bool:
        try:
            written = call()
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        spec = written.spec
        self._observed = (
            spec.holder_identity,
            spec.renew_time,
            spec.lease_transitions,
            written.metadata.resource_version,
        )
        self._observed_at = self.clock()
        return True

    def _attempt(self) -> bool:
        """An attempt whose API errors (the server briefly unreachable) count as a failed attempt, not a crash."""
        try:
            return self.try_acquire_or_renew()
        except Exception as exc:  # any failure to talk to the API server is a lost round
            log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
            return False

    def acquire(self, stop: threading.Event) -> bool:
        """Block until this identity leads (True) or `stop` is set (False); retries every `retry_period`."""
        log.info("waiting to lead: lease %s/%s as %s", self.namespace, self.name, self.identity)
        while not stop.is_set():
            if self._attempt():
                log.info("leading: lease %s/%s as %s", self.namespace, self.name, self.identity)
                return True
            stop.wait(self.retry_period)
        return False

    def keep(self, stop: threading.Event) -> bool:
        """Renew every `retry_period` until `stop` is set (True) or no renewal succeeded for `renew_deadline`
        seconds (False: leadership lost; the caller must stop acting at once)."""
        last = self.clock()
        while not stop.wait(self.retry_period):
            if self._attempt():
                last = self.clock()
            elif self._observed is not None and self._observed[0] not in ("", self.identity):
                log.error("lost the lease %s/%s: %s holds it", self.namespace, self.name, self._observed[0])
                return False
            elif self.clock() - last >= self.renew_deadline:
                log.error(
                    "lost the lease %s/%s: not renewed for %.0f s", self.namespace, self.name, self.renew_deadline
                )
                return False
        return True

    def release(self) -> None:
        """On a clean stop: hand the Lease over at once (client-go's ReleaseOnCancel) instead of letting the
        successor wait `lease_duration`. Best effort: a failure leaves the Lease to expire."""
        try:
            lease = self._leases.read_namespaced_lease(self.name, self.namespace, _request_timeout=5)
            if lease.spec.holder_identity != self.identity:
                return
            lease.spec.holder_identity = ""
            lease.spec.lease_duration_seconds = 1
            self._leases.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=5)
            log.info("released the lease %s/%s", self.namespace, self.name)
        except Exception as exc:  # best effort on the way out
            log.warning("could not release the lease %s/%s: %s", self.namespace, self.name, exc)
