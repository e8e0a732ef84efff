"""Least privilege, checked on every rendering: no wildcards, no Secrets, no RBAC escalation verbs."""

from __future__ import annotations

import re

import pytest
from kubetune.operator.manifests.meta import Owner
from kubetune.operator.manifests.trainer import trainer_rbac

from . import rbac, render
from .conftest import CUSTOM_VALUES, NAMESPACED_VALUES

FORBIDDEN_VERBS = {"*", "bind", "escalate", "impersonate", "deletecollection", "update"}
FORBIDDEN_RESOURCES = {
    "*",
    "secrets",
    "pods/exec",
    "pods/attach",
    "pods/portforward",
    "nodes/proxy",
    "serviceaccounts/token",
}
# The one `update` allowed: on a kubetune object's finalizers subresource, which changes nothing on its own and is
# what the OwnerReferencesPermissionEnforcement admission plugin demands of a creator of children that set
# blockOwnerDeletion (docs/install.md). `update` anywhere else would be a second way to write what patch writes.
ALLOWED_UPDATES = {
    ("update", "kubetune.dev", "finetunejobs/finalizers"),
    ("update", "kubetune.dev", "modelserves/finalizers"),
}
CLUSTER_SCOPED_RESOURCES = {"customresourcedefinitions", "namespaces", "clusterkopfpeerings", "finetuneruntimes"}

CASES = {
    "kustomize:cluster-wide": lambda: render.kustomize(render.OVERLAYS / "cluster-wide"),
    "kustomize:namespaced": lambda: render.kustomize(render.OVERLAYS / "namespaced"),
    "helm:default": lambda: render.helm_template(),
    "helm:namespaced": lambda: render.helm_template(NAMESPACED_VALUES),
    "helm:custom": lambda: render.helm_template(CUSTOM_VALUES),
}


def least_privilege_problems(manifests: list[dict]) -> list[str]:
    problems = []
    for manifest in manifests:
        if manifest["kind"] not in ("Role", "ClusterRole"):
            continue
        name = f"{manifest['kind']}/{manifest['metadata']['name']}"
        for rule in manifest.get("rules") or []:
            if "nonResourceURLs" in rule:
                problems.append(f"{name}: nonResourceURLs {rule['nonResourceURLs']}")
            for key in ("apiGroups", "resources", "verbs"):
                if "*" in rule.get(key, []):
                    problems.append(f"{name}: wildcard in {key}")
        for verb, group, resource in rbac.rule_permissions(manifest.get("rules") or []):
            if (verb in FORBIDDEN_VERBS and (verb, group, resource) not in ALLOWED_UPDATES) or (
                resource in FORBIDDEN_RESOURCES
            ):
                problems.append(f"{name}: {verb} {group or 'core'}/{resource}")
    return problems


@pytest.mark.parametrize("case", sorted(CASES))
def test_no_wildcards_secrets_or_escalation(case):
    assert least_privilege_problems(CASES[case]()) == []


def test_the_check_can_fail():
    role = {"kind": "ClusterRole", "metadata": {"name": "bad"}, "rules": [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["escalate", "bind"]},
        {"apiGroups": ["*"], "resources": ["pods"], "verbs": ["list"]},
        {"apiGroups": ["kubetune.dev"], "resources": ["finetunejobs", "finetunejobs/finalizers"], "verbs": ["update"]},
    ]}  # fmt: skip
    assert len(least_privilege_problems([role])) == 5


@pytest.mark.parametrize("case", ["kustomize:namespaced", "helm:namespaced"])
def test_namespaced_mode_keeps_the_cluster_role_to_cluster_scoped_reads(case):
    manifests = CASES[case]()
    cluster = set().union(*rbac.roles(manifests, "ClusterRole").values())
    assert {resource for _, _, resource in cluster} <= CLUSTER_SCOPED_RESOURCES
    reads = {verb for verb, _, resource in cluster if resource != "finetuneruntimes"}
    assert reads <= {"list", "watch"}
    assert {(verb, group) for verb, group, resource in cluster if resource == "finetuneruntimes"} == {
        ("get", "kubetune.dev")
    }, "FineTuneRuntimes are only read, one by name"


def test_per_job_role_can_be_delegated_without_escalate(cluster_wide):
    """RBAC lets a subject create a Role only with permissions it holds: the trainer's get/patch on its report
    ConfigMap must therefore be in the operator's own rules (docs/install.md explains it)."""
    granted = rbac.granted_in_namespace(cluster_wide, "any-namespace")
    owner = Owner("kubetune.dev/v1alpha1", "FineTuneJob", "probe", "any-namespace", "uid")
    role = next(item for item in trainer_rbac(owner) if item["kind"] == "Role")
    assert rbac.rule_permissions(role["rules"]) <= granted
    assert ("get", "", "configmaps") in granted and ("patch", "", "configmaps") in granted
    assert ("create", "rbac.authorization.k8s.io", "roles") in granted
    assert ("create", "rbac.authorization.k8s.io", "rolebindings") in granted


def documented_permissions() -> set[rbac.Permission]:
    """The RBAC table of docs/install.md, expanded like the ClusterRole's rules."""
    text = (render.REPO_ROOT / "docs" / "install.md").read_text()
    table = text[text.index("| API group | Resource | Verbs | Why |") :].split("\n\n", 1)[0].splitlines()[2:]
    documented = set()
    for row in table:
        group, resources, verbs = (cell.strip() for cell in row.strip("|").split("|")[:3])
        group = "" if group == "core" else group.strip("`")
        names = re.findall(r"`([^`]+)`", resources.split("(")[0])
        documented |= {(verb.strip(), group, name) for name in names for verb in verbs.split(",")}
    return documented


def test_install_docs_list_exactly_the_cluster_role(cluster_wide):
    granted = set().union(*rbac.roles(cluster_wide, "ClusterRole").values())
    assert documented_permissions() == granted
