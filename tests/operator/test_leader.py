"""LeaderElector's rules against an in-memory Lease API with optimistic concurrency (resourceVersion) and a fake
clock: the timing decisions the real-control-plane test (tests/cluster/test_leader_election.py) cannot force."""

from __future__ import annotations

import copy
import threading

import pytest
from kubernetes.client import V1Lease, V1LeaseSpec, V1ObjectMeta
from kubernetes.client.rest import ApiException
from kubetune.operator.leader import LeaderElector


class FakeLeases:
    """read/create/replace of one namespace's Leases, refusing stale writes with 409 as the API server does."""

    def __init__(self) -> None:
        self.leases: dict[str, V1Lease] = {}
        self.version = 0
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise ApiException(status=503, reason="unavailable")

    def _store(self, name: str, lease: V1Lease) -> V1Lease:
        self.version += 1
        lease.metadata.resource_version = str(self.version)
        self.leases[name] = copy.deepcopy(lease)
        return copy.deepcopy(lease)

    def read_namespaced_lease(self, name: str, namespace: str, **_: object) -> V1Lease:
        self._check()
        if name not in self.leases:
            raise ApiException(status=404, reason="NotFound")
        return copy.deepcopy(self.leases[name])

    def create_namespaced_lease(self, namespace: str, body: dict, **_: object) -> V1Lease:
        self._check()
        name = body["metadata"]["name"]
        if name in self.leases:
            raise ApiException(status=409, reason="AlreadyExists")
        spec = body["spec"]
        lease = V1Lease(
            metadata=V1ObjectMeta(name=name, namespace=namespace),
            spec=V1LeaseSpec(
                holder_identity=spec["holderIdentity"],
                lease_duration_seconds=spec["leaseDurationSeconds"],
                renew_time=spec["renewTime"],
                lease_transitions=spec["leaseTransitions"],
            ),
        )
        return self._store(name, lease)

    def replace_namespaced_lease(self, name: str, namespace: str, body: V1Lease, **_: object) -> V1Lease:
        self._check()
        if body.metadata.resource_version != self.leases[name].metadata.resource_version:
            raise ApiException(status=409, reason="Conflict")
        spec = body.spec
        if isinstance(spec, dict):
            spec = V1LeaseSpec(
                holder_identity=spec["holderIdentity"],
                lease_duration_seconds=spec["leaseDurationSeconds"],
                acquire_time=spec["acquireTime"],
                renew_time=spec["renewTime"],
                lease_transitions=spec["leaseTransitions"],
            )
        return self._store(name, V1Lease(metadata=body.metadata, spec=spec))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def elector(api: FakeLeases, identity: str, clock: Clock, **timing: float) -> LeaderElector:
    made = LeaderElector(None, "kubetune", "kubetune-operator", identity, clock=clock, **timing)
    object.__setattr__(made, "_api_override", api)
    return made


@pytest.fixture(autouse=True)
def _fake_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LeaderElector, "_leases", property(lambda self: self._api_override))


def test_a_follower_takes_over_only_after_the_lease_went_unrenewed_for_its_duration():
    api, clock = FakeLeases(), Clock()
    leader, follower = elector(api, "a", clock), elector(api, "b", clock)
    assert leader.try_acquire_or_renew()
    assert not follower.try_acquire_or_renew()
    clock.now += 14
    assert not follower.try_acquire_or_renew()
    assert leader.try_acquire_or_renew()  # renewed: the follower's count starts again when it sees the change
    clock.now += 10
    assert not follower.try_acquire_or_renew()
    clock.now += 14.9
    assert not follower.try_acquire_or_renew()
    clock.now += 0.2
    assert follower.try_acquire_or_renew()
    spec = api.leases["kubetune-operator"].spec
    assert (spec.holder_identity, spec.lease_transitions) == ("b", 1)
    assert not leader.try_acquire_or_renew(), "the old leader sees a live holder and must not write"


def test_two_candidates_for_a_free_lease_get_one_winner():
    api, clock = FakeLeases(), Clock()
    first, second = elector(api, "a", clock), elector(api, "b", clock)
    assert first.try_acquire_or_renew()
    api.leases["kubetune-operator"].spec.holder_identity = ""  # released
    stale = api.read_namespaced_lease("kubetune-operator", "kubetune")
    assert second.try_acquire_or_renew()
    stale.spec.holder_identity = "a"
    with pytest.raises(ApiException):  # a write based on the old version is refused: no split brain
        api.replace_namespaced_lease("kubetune-operator", "kubetune", stale)


def test_a_leader_that_cannot_renew_within_the_deadline_gives_up():
    api, clock = FakeLeases(), Clock()
    leader = elector(api, "a", clock, retry_period=0.01, renew_deadline=10)
    assert leader.try_acquire_or_renew()
    api.down = True

    class Ticking(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            clock.now += 3
            return False

    assert leader.keep(Ticking()) is False


def test_release_lets_a_follower_take_over_at_once():
    api, clock = FakeLeases(), Clock()
    leader, follower = elector(api, "a", clock), elector(api, "b", clock)
    assert leader.try_acquire_or_renew()
    assert not follower.try_acquire_or_renew()
    leader.release()
    assert follower.try_acquire_or_renew()


def test_a_leader_that_finds_another_holder_gives_up_at_once():
    """E.g. after a long pause (GC, a frozen node) its Lease expired and a follower took over."""
    api, clock = FakeLeases(), Clock()
    leader, follower = elector(api, "a", clock, retry_period=0.01), elector(api, "b", clock)
    assert leader.try_acquire_or_renew()
    assert not follower.try_acquire_or_renew()
    clock.now += 16
    assert follower.try_acquire_or_renew()
    waits = []

    class Counting(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waits.append(timeout)
            clock.now += 1
            return False

    assert leader.keep(Counting()) is False
    assert len(waits) == 1, "it gave up at the first renewal, not after the renew deadline"
