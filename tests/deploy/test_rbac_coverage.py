"""The rendered RBAC grants exactly what the operator uses: every (verb, apiGroup, resource) it sent to the mock
API server during the operator scenario suite and the installed-mode runs (kopf peering, one watched namespace),
plus what its per-job trainer Role delegates. Nothing missing (it would fail in a cluster), nothing more."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from . import rbac, render
from .conftest import NAMESPACED_VALUES
from .operator_recording import peering_run, scenario_permissions
from .rbac import Permission

CLUSTER_SCOPED = {"customresourcedefinitions", "namespaces", "clusterkopfpeerings", "nodes", "persistentvolumes"}


@dataclass(frozen=True)
class Recording:
    scenarios: set[Permission]
    cluster_wide: set[Permission]
    cluster_wide_delegated: set[Permission]
    namespaced: set[Permission]
    namespaced_delegated: set[Permission]

    def expected_cluster_wide(self) -> set[Permission]:
        return self.scenarios | self.cluster_wide | self.cluster_wide_delegated

    def expected_in_namespace(self) -> set[Permission]:
        """What a per-namespace Role must grant: the scenarios' calls, made inside one namespace."""
        scenario_local = {perm for perm in self.scenarios if perm[2] not in CLUSTER_SCOPED}
        local = {perm for perm in self.namespaced if perm[2] not in CLUSTER_SCOPED}
        return scenario_local | local | self.namespaced_delegated

    def expected_cluster_scoped_when_namespaced(self) -> set[Permission]:
        return {perm for perm in self.namespaced if perm[2] in CLUSTER_SCOPED}


@pytest.fixture(scope="module")
def recording() -> Recording:
    cluster_used, cluster_delegated = peering_run(None)
    namespaced_used, namespaced_delegated = peering_run("team-a")
    return Recording(
        scenarios=scenario_permissions(),
        cluster_wide=cluster_used,
        cluster_wide_delegated=cluster_delegated,
        namespaced=namespaced_used,
        namespaced_delegated=namespaced_delegated,
    )


def _describe(perms: set[Permission]) -> str:
    return ", ".join(f"{verb} {group or 'core'}/{resource}" for verb, group, resource in sorted(perms)) or "nothing"


def _assert_same(granted: set[Permission], expected: set[Permission], where: str) -> None:
    missing, extra = expected - granted, granted - expected
    problem = f"the operator uses but is not granted: {_describe(missing)}; granted but never used: {_describe(extra)}"
    assert not missing and not extra, f"{where}: {problem}"


def test_recording_saw_the_operator_work(recording):
    assert ("create", "batch", "jobs") in recording.scenarios
    assert ("watch", "kubetune.dev", "finetunejobs") in recording.cluster_wide
    assert {"list", "watch", "patch"} <= {
        verb for verb, _, res in recording.cluster_wide if res == "clusterkopfpeerings"
    }
    assert {"list", "watch", "patch"} <= {verb for verb, _, res in recording.namespaced if res == "kopfpeerings"}
    assert ("patch", "kubetune.dev", "finetunejobs/status") in recording.cluster_wide_delegated


def test_operator_never_touches_secrets(recording):
    every = recording.scenarios | recording.cluster_wide | recording.namespaced
    assert not {perm for perm in every if perm[2] == "secrets"}


@pytest.mark.parametrize("source", ["kustomize", "helm"])
def test_cluster_wide_rbac_is_exactly_what_the_operator_uses(source, recording, cluster_wide, helm_default):
    manifests = cluster_wide if source == "kustomize" else helm_default
    assert not render.by_kind(manifests, "Role")
    granted = set().union(*rbac.roles(manifests, "ClusterRole").values())
    _assert_same(granted, recording.expected_cluster_wide(), f"{source} cluster-wide ClusterRole")


@pytest.mark.parametrize("source", ["kustomize", "helm"])
def test_namespaced_rbac_is_exactly_what_the_operator_uses(source, recording, namespaced, helm_namespaced):
    manifests = namespaced if source == "kustomize" else helm_namespaced
    cluster_roles = rbac.roles(manifests, "ClusterRole")
    granted_cluster = set().union(*cluster_roles.values()) if cluster_roles else set()
    _assert_same(granted_cluster, recording.expected_cluster_scoped_when_namespaced(), f"{source} ClusterRole")
    if not recording.expected_cluster_scoped_when_namespaced():
        assert not cluster_roles and not render.by_kind(manifests, "ClusterRoleBinding"), "an empty ClusterRole"
    roles = rbac.roles(manifests, "Role")
    assert sorted(ns for ns, _ in roles) == NAMESPACED_VALUES["watch"]["namespaces"]
    for (namespace, _), granted in roles.items():
        _assert_same(granted, recording.expected_in_namespace(), f"{source} Role in {namespace}")


def test_the_comparison_fails_on_a_missing_or_extra_permission(recording):
    expected = recording.expected_cluster_wide()
    probe = ("create", "batch", "jobs")
    with pytest.raises(AssertionError, match="not granted: create batch/jobs; granted but never used: nothing"):
        _assert_same(expected - {probe}, expected, "probe")
    with pytest.raises(AssertionError, match="not granted: nothing; granted but never used: get core/secrets"):
        _assert_same(expected | {("get", "", "secrets")}, expected, "probe")
