"""RBAC proven by the API server itself: the operator's ServiceAccount was refused nothing in any scenario, and
every permission the rendered ClusterRole and Roles grant was used at least once, or is justified below.

The evidence is the audit log (level Metadata) of the real API servers: the session's control plane, where every
scenario ran the operator as its ServiceAccount, and the fresh ones of the install tests (kopf peering,
cluster-wide and per-namespace). This module runs after every other test of the session (tests/cluster/conftest)
and needs them in the same session; run alone it is skipped, saying so.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from kubetune.api.base import API_GROUP, API_VERSION
from kubetune.operator.manifests.meta import Owner
from kubetune.operator.manifests.trainer import trainer_rbac

from tests.deploy import rbac, render
from tests.deploy.conftest import HA_VALUES, NAMESPACED_VALUES
from tests.deploy.rbac import Permission

from .conftest import COLLECTED_MODULES
from .install_support import installed_permissions

# The modules whose operator runs this test reads: every scenario, the end-to-end run and the installs.
EVIDENCE = {
    "test_finetunejob_lifecycle.py",
    "test_finetunejob_recovery.py",
    "test_modelserve.py",
    "test_observability.py",
    "test_end_to_end.py",
    "test_install.py",
    "test_leader_election.py",
    "test_kueue.py",
    "test_runtimes.py",
}
RUNTIME_READER = {"kustomize": "kubetune-operator-runtimes", "helm": "kubetune-operator-runtimes"}
INSTALL_MODES = ("kustomize:cluster-wide", "kustomize:namespaced", "helm:cluster-wide")
CLUSTER_SCOPED = {
    "customresourcedefinitions",
    "namespaces",
    "clusterkopfpeerings",
    "nodes",
    "persistentvolumes",
    "finetuneruntimes",
}
# Granted but never a request, each for a reason the API server enforces:
ADMISSION_CHECKED = {
    # OwnerReferencesPermissionEnforcement: a child may name its owner with blockOwnerDeletion only if its creator
    # may update the owner's finalizers. The plugin asks the authorizer; no request is made.
    ("update", API_GROUP, "finetunejobs/finalizers"),
    ("update", API_GROUP, "modelserves/finalizers"),
}
# Leader election (the HA install only: a Role in the operator's namespace), compared with its own renderings below.
LEADER_ELECTION = "leases"
# A namespace being deleted refuses new objects with 403 (NamespaceLifecycle admission): not an RBAC refusal.
TERMINATING = "because it is being terminated"
# test_refusals.py provokes quota refusals of the operator's Job creates on purpose (and checks them itself).
PROVOKED = "exceeded quota: kubetune-test-refuses"


def delegated() -> set[Permission]:
    """What the per-job trainer Role grants: RBAC lets the operator create that Role only if it holds every one
    of those permissions itself (no `escalate`), whether or not it calls them."""
    owner = Owner(f"{API_GROUP}/{API_VERSION}", "FineTuneJob", "probe", "probe", "uid")
    role = next(item for item in trainer_rbac(owner) if item["kind"] == "Role")
    return rbac.rule_permissions(role["rules"])


@dataclass(frozen=True)
class Evidence:
    scenarios: set[Permission]
    installs: dict[str, set[Permission]]
    refused: list[str]
    leader_election: set[Permission]

    def cluster_wide(self) -> set[Permission]:
        return self.scenarios | self.installs["kustomize:cluster-wide"] | self.installs["helm:cluster-wide"]

    def in_namespace(self) -> set[Permission]:
        """What a watched namespace's Role must grant: the namespaced calls of the scenarios and of the
        namespaced install (the scenarios' operators watch their own namespace, as a namespaced install does)."""
        every = self.scenarios | self.installs["kustomize:namespaced"]
        return {perm for perm in every if perm[2] not in CLUSTER_SCOPED}

    def cluster_scoped_when_namespaced(self) -> set[Permission]:
        return {perm for perm in self.installs["kustomize:namespaced"] if perm[2] in CLUSTER_SCOPED}


@pytest.fixture(scope="module")
def evidence(request: pytest.FixtureRequest, control_plane) -> Evidence:
    from tests.support.envtest.fixtures import OPERATOR_USER

    missing = EVIDENCE - request.config.stash.get(COLLECTED_MODULES, set())
    if missing:
        pytest.skip(f"reads the audit log of the whole tier; run it with tests/cluster ({sorted(missing)} not run)")
    installs = installed_permissions(request.config)
    absent = [mode for mode in INSTALL_MODES if not installs.get(mode)]
    if absent:
        pytest.skip(f"the install tests of {absent} did not run in this session")
    refused = [
        f"{e.code} {e.verb} {e.uri}: {e.message}"
        for e in control_plane.audit.refused(OPERATOR_USER)
        if TERMINATING not in e.message and PROVOKED not in e.message
    ]
    used = control_plane.audit.permissions(OPERATOR_USER)
    leases = {perm for perm in used if perm[2] == LEADER_ELECTION}
    return Evidence(used - leases, installs, refused, leases)


def _describe(perms: set[Permission]) -> str:
    return ", ".join(f"{verb} {group or 'core'}/{resource}" for verb, group, resource in sorted(perms)) or "nothing"


def assert_exactly(granted: set[Permission], used: set[Permission], where: str) -> None:
    """Everything used is granted, and everything granted is used or justified (ADMISSION_CHECKED, delegated)."""
    missing = used - granted
    unused = granted - used - ADMISSION_CHECKED - delegated()
    problem = f"used but not granted: {_describe(missing)}; granted but never used: {_describe(unused)}"
    assert not missing and not unused, f"{where}: {problem}"


def test_the_operator_was_refused_nothing(evidence: Evidence):
    """No 401/403 for the operator's ServiceAccount over the whole session (each scenario also checks its own)."""
    assert evidence.refused == []


def test_the_evidence_shows_the_operator_at_work(evidence: Evidence):
    """The audit log saw the calls the coverage below relies on (so an empty log cannot pass it)."""
    assert {("create", "batch", "jobs"), ("patch", "batch", "jobs")} <= evidence.scenarios
    assert ("delete", "batch", "jobs") not in evidence.scenarios, "the garbage collector deletes trainer Jobs"
    assert ("patch", API_GROUP, "finetunejobs/status") in evidence.scenarios
    assert {"create", "list", "watch", "patch"} <= {
        verb for verb, _, res in evidence.installs["kustomize:cluster-wide"] if res == "clusterkopfpeerings"
    }
    assert {"create", "list", "watch", "patch"} <= {
        verb for verb, _, res in evidence.installs["kustomize:namespaced"] if res == "kopfpeerings"
    }


def test_the_operator_never_touches_secrets(evidence: Evidence):
    every = evidence.scenarios.union(*evidence.installs.values())
    assert not {perm for perm in every if perm[2] == "secrets"}


@pytest.mark.parametrize("source", ["kustomize", "helm"])
def test_cluster_wide_rbac_is_what_the_operator_uses(source: str, evidence: Evidence):
    manifests = render.kustomize(render.OVERLAYS / "cluster-wide") if source == "kustomize" else render.helm_template()
    assert not render.by_kind(manifests, "Role")
    granted = set().union(*rbac.roles(manifests, "ClusterRole").values())
    assert_exactly(granted, evidence.cluster_wide(), f"{source} cluster-wide ClusterRole")


@pytest.mark.parametrize("source", ["kustomize", "helm"])
def test_namespaced_rbac_is_what_the_operator_uses(source: str, evidence: Evidence):
    if source == "kustomize":
        manifests = render.kustomize(render.OVERLAYS / "namespaced")
    else:
        manifests = render.helm_template(NAMESPACED_VALUES)
    cluster_roles = rbac.roles(manifests, "ClusterRole")
    # The one cluster-wide right of a namespaced install: reading FineTuneRuntimes (cluster-scoped, admin-owned).
    assert [name for _, name in cluster_roles] == [RUNTIME_READER[source]]
    assert len(render.by_kind(manifests, "ClusterRoleBinding")) == 1
    granted = set().union(*cluster_roles.values())
    assert_exactly(granted, evidence.cluster_scoped_when_namespaced(), f"{source} namespaced ClusterRole")
    roles = rbac.roles(manifests, "Role")
    assert sorted(ns for ns, _ in roles) == NAMESPACED_VALUES["watch"]["namespaces"]
    for (namespace, _), granted in roles.items():
        assert_exactly(granted, evidence.in_namespace(), f"{source} Role in {namespace}")


@pytest.mark.parametrize("source", ["kustomize", "helm"])
def test_leader_election_rbac_is_what_the_operator_uses(source: str, evidence: Evidence):
    """The HA install adds exactly one Role, in the operator's namespace, for the Lease (test_leader_election)."""
    if source == "kustomize":
        manifests = render.kustomize(render.OVERLAYS / "cluster-wide-ha")
    else:
        manifests = render.helm_template(HA_VALUES)
    roles = rbac.roles(manifests, "Role")
    assert [namespace for namespace, _ in roles] == [render.NAMESPACE]
    assert_exactly(set().union(*roles.values()), evidence.leader_election, f"{source} leader-election Role")


def test_the_comparison_fails_on_a_missing_or_extra_permission():
    used = {("create", "batch", "jobs"), ("get", API_GROUP, "finetunejobs")}
    granted = used | ADMISSION_CHECKED | delegated()
    assert_exactly(granted, used, "probe")
    with pytest.raises(AssertionError, match="used but not granted: create batch/jobs; granted but never used: noth"):
        assert_exactly(granted - {("create", "batch", "jobs")}, used, "probe")
    with pytest.raises(AssertionError, match="used but not granted: nothing; granted but never used: get core/secrets"):
        assert_exactly(granted | {("get", "", "secrets")}, used, "probe")
