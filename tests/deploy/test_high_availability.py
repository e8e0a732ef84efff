"""The two-replica mode (docs/install.md, "High availability"): kustomize's cluster-wide-ha overlay and the chart
with operator.replicas=2 render the same leader-election setup; the chart refuses two replicas without it (kopf
peering would freeze both). tests/cluster/test_leader_election.py runs it on a real API server."""

from __future__ import annotations

from typing import Any

import pytest

from . import rbac, render
from .conftest import HA_VALUES

LEASE_RULES = {("get", "coordination.k8s.io", "leases"), ("create", "coordination.k8s.io", "leases")}
LEASE_RULES |= {("update", "coordination.k8s.io", "leases")}


def _operator(manifests: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    deployment = render.by_kind(manifests, "Deployment")[0]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return deployment, {item["name"]: item for item in container["env"]}


@pytest.fixture(scope="module", params=["kustomize", "helm"])
def ha(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    if request.param == "kustomize":
        return render.kustomize(render.OVERLAYS / "cluster-wide-ha")
    return render.helm_template(HA_VALUES)


def test_two_replicas_roll_with_leader_election_and_no_peering(ha):
    deployment, env = _operator(ha)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert env["KUBETUNE_LEADER_ELECTION"]["value"] == "true"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert not env.get("KUBETUNE_PEERING", {}).get("value"), "kopf peering is off with leader election"


def test_the_lease_role_is_namespaced_and_minimal(ha):
    roles = rbac.roles(ha, "Role")
    assert list(roles) and all(namespace == render.NAMESPACE for namespace, _ in roles)
    assert set().union(*roles.values()) == LEASE_RULES
    bindings = render.by_kind(ha, "RoleBinding")
    assert [(b["roleRef"]["name"], b["subjects"][0]["name"]) for b in bindings] == [
        (name, "kubetune-operator") for _, name in roles
    ]


def test_the_default_install_stays_one_replica_with_peering():
    for manifests in (render.kustomize(render.OVERLAYS / "cluster-wide"), render.helm_template()):
        deployment, env = _operator(manifests)
        assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
        assert env["KUBETUNE_PEERING"]["value"] == "kubetune" and "KUBETUNE_LEADER_ELECTION" not in env
        assert not render.by_kind(manifests, "Role")


def test_the_chart_refuses_two_replicas_without_leader_election():
    with pytest.raises(render.RenderError, match="leaderElection"):
        render.helm_template({"operator": {"replicas": 2}})
