"""High availability (issue 11, point 5): two `kubetune operator` processes with Lease leader election against one
namespace, as the ServiceAccount with the leases Role of deploy/kustomize/overlays/cluster-wide-ha. Exactly one acts
(the audit log counts the Job creations); after a SIGKILL of the leader (its Lease is not released) the follower
takes over within the lease duration plus a margin, and a SIGTERM (a rolling update) hands the Lease over at once.
The measured takeover times are printed (`pytest -s`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.deploy import rbac, render
from tests.support.envtest.fixtures import OPERATOR_NAMESPACE, OPERATOR_USER, RealCluster, apply
from tests.support.kube.server import FTJ, JOBS

from .helpers import exists, finetunejob, operator_requests, wait_until
from .install_support import free_port

LEASES = ("coordination.k8s.io/v1", "leases")
LEASE_SECONDS = 15  # the default, as client-go's
TAKEOVER_MARGIN = 12  # the follower's retry period (2 s), kopf's start and the Job creation on a loaded box


@pytest.fixture(scope="module")
def lease_rbac(control_plane: RealCluster) -> set[rbac.Permission]:
    """Install the HA overlay's leases Role and RoleBinding (what `kubectl apply -k .../cluster-wide-ha` adds to
    the cluster-wide install the session already holds); returns what they grant."""
    manifests = render.kustomize(render.OVERLAYS / "cluster-wide-ha")
    added = [m for m in manifests if m["kind"] in ("Role", "RoleBinding")]
    assert {m["metadata"]["namespace"] for m in added} == {OPERATOR_NAMESPACE}
    for manifest in added:
        apply(control_plane.admin, manifest)
    granted = set().union(*rbac.roles(manifests, "Role").values())
    # The authorizer follows new Roles through a cache: wait, so that no 403 of the operator lands in the log.
    wait_until(lambda: all(_allowed(control_plane, *perm) for perm in granted), "for RBAC to allow the leases")
    return granted


def _allowed(cluster: RealCluster, verb: str, group: str, resource: str) -> bool:
    """Ask the API server (SubjectAccessReview, as admin) whether the operator may do it, without trying."""
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": OPERATOR_USER,
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{OPERATOR_NAMESPACE}"],
            "resourceAttributes": {"namespace": OPERATOR_NAMESPACE, "verb": verb, "group": group, "resource": resource},
        },
    }
    answer = cluster.admin.create(("authorization.k8s.io/v1", "subjectaccessreviews"), None, review)
    return bool(answer.get("status", {}).get("allowed"))


class Replica:
    """One operator pod's process: `kubetune operator` with leader election, identity POD_NAME."""

    def __init__(self, cluster: RealCluster, ns: str, identity: str, lease: str, logs: Path) -> None:
        self.identity = identity
        self.log = logs / f"{identity}.log"
        self.liveness = f"http://127.0.0.1:{free_port()}/healthz"
        env = {
            **os.environ,
            "KUBECONFIG": str(cluster.operator_kubeconfig),
            "KUBETUNE_LEADER_ELECTION": "true",
            "KUBETUNE_LEADER_ELECTION_NAME": lease,
            "KUBETUNE_LEADER_ELECTION_NAMESPACE": OPERATOR_NAMESPACE,
            "KUBETUNE_METRICS_PORT": "0",
            "KUBETUNE_LIVENESS_ENDPOINT": self.liveness,
            "KUBETUNE_RESYNC": "false",
            "KUBETUNE_TRAINER_IMAGE": "example.org/trainer:ha",
            "POD_NAME": identity,
        }
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "kubetune.cli", "operator", "--namespace", ns],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def says(self, text: str) -> bool:
        assert self.process.poll() is None, f"{self.identity} exited:\n{self.output()[-3000:]}"
        return text in self.output()

    def live(self) -> bool:
        """The liveness probe's view: a follower must answer too, or the kubelet restarts it."""
        try:
            return httpx.get(self.liveness, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def end(self, sig: int) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(30)


@pytest.fixture
def replicas(control_plane: RealCluster, ns: str, tmp_path: Path, lease_rbac) -> Iterator:
    started: list[Replica] = []

    def start(identity: str) -> Replica:
        replica = Replica(control_plane, ns, identity, f"kubetune-{ns}", tmp_path)
        started.append(replica)
        return replica

    yield start
    for replica in started:
        replica.end(signal.SIGKILL)


def _holder(kube, ns: str) -> str:
    lease = kube.find(LEASES, OPERATOR_NAMESPACE, f"kubetune-{ns}")
    return (lease or {}).get("spec", {}).get("holderIdentity") or ""


def _job_created_after(kube, ns: str, name: str, start: float) -> float:
    """Seconds from `start` until the trainer Job of FineTuneJob `name` exists."""
    kube.wait_for(JOBS, ns, f"{name}-train", exists, LEASE_SECONDS + TAKEOVER_MARGIN + 10)
    return time.monotonic() - start


@pytest.mark.timeout(180)
def test_one_replica_acts_and_the_other_takes_over(control_plane, kube, ns, replicas, lease_rbac, capsys):
    since = control_plane.audit.offset()
    first = replicas("operator-a")
    wait_until(lambda: _holder(kube, ns) == "operator-a", "for the first replica to lead", 60)
    wait_until(lambda: first.says("leading"), "for the leader to start the operator")
    second = replicas("operator-b")
    wait_until(lambda: second.says("waiting to lead"), "for the second replica to wait", 60)
    wait_until(second.live, "for the follower to answer its liveness probe")

    kube.create(FTJ, ns, finetunejob(ns, "first"))
    kube.wait_for(JOBS, ns, "first-train", exists)
    creates = [(e.name, e.code) for e in operator_requests(control_plane, since, "create", "jobs")]
    assert creates == [("first-train", 201)], "exactly one replica acts"
    assert not second.says("leading:")

    first.end(signal.SIGKILL)  # a crashed pod: the Lease is not released
    killed = time.monotonic()
    kube.create(FTJ, ns, finetunejob(ns, "second"))
    takeover = _job_created_after(kube, ns, "second", killed)
    lease = kube.get(LEASES, OPERATOR_NAMESPACE, f"kubetune-{ns}")["spec"]
    assert (lease["holderIdentity"], lease["leaseTransitions"]) == ("operator-b", 1)
    assert takeover < LEASE_SECONDS + TAKEOVER_MARGIN, f"takeover after a SIGKILL took {takeover:.1f} s"
    wait_until(second.live, "for the new leader's kopf to answer the liveness probe on the same port")

    third = replicas("operator-c")  # a rolling update: the new pod waits, the old leader stops (SIGTERM)
    wait_until(lambda: third.says("waiting to lead"), "for the new replica to wait", 60)
    stopped = time.monotonic()
    assert second.end(signal.SIGTERM) == 0
    kube.create(FTJ, ns, finetunejob(ns, "third"))
    # The claim is about the Lease: a released one is taken at the follower's next try, not after the lease
    # duration. Starting kopf afterwards takes seconds more on a loaded machine, so the Job only has to follow.
    wait_until(lambda: _holder(kube, ns) == "operator-c", "for the new replica to take the released Lease", 30)
    handover = time.monotonic() - stopped
    assert handover < LEASE_SECONDS, f"a released Lease was taken over only after {handover:.1f} s"
    _job_created_after(kube, ns, "third", stopped)
    with capsys.disabled():
        print(f"\nleader election: takeover after SIGKILL {takeover:.1f} s, handover after SIGTERM {handover:.1f} s")

    creates = [(e.name, e.code) for e in operator_requests(control_plane, since, "create", "jobs")]
    # Each Job is created once. A leader killed between creating a Job and writing status leaves the new leader
    # to try the create again: the server answers 409 and the existing Job (ours) is used, never a second one.
    assert sorted(c for c in creates if c[1] == 201) == [
        ("first-train", 201),
        ("second-train", 201),
        ("third-train", 201),
    ]
    assert {code for _, code in creates} <= {201, 409}, creates
    assert control_plane.audit.refused(OPERATOR_USER, since) == []
    used = {(e.verb, e.group, e.resource) for e in control_plane.audit.events(since, OPERATOR_USER)}
    assert {perm for perm in used if perm[2] == "leases"} == lease_rbac, "the leases Role grants what is used"
    for replica in (first, second):
        assert "Traceback" not in replica.output(), replica.output()[-3000:]
