"""The restricted Pod Security Standard check, and the operator Deployment passing it in every rendering."""

from __future__ import annotations

import copy

import pytest

from tests.support.pod_security import assert_restricted, restricted_violations

from . import render

COMPLIANT_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "ok"},
    "spec": {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [
            {
                "name": "main",
                "image": "busybox",
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            }
        ],
        "volumes": [{"name": "scratch", "emptyDir": {}}, {"name": "data", "persistentVolumeClaim": {"claimName": "x"}}],
    },
}


def _with(path: list, value) -> dict:
    pod = copy.deepcopy(COMPLIANT_POD)
    node = pod
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return pod


def test_compliant_pod_passes():
    assert restricted_violations(COMPLIANT_POD) == []


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (["spec", "hostNetwork"], True, "hostNetwork"),
        (["spec", "hostPID"], True, "hostPID"),
        (["spec", "volumes"], [{"name": "root", "hostPath": {"path": "/"}}], "hostPath"),
        (["spec", "volumes"], [{"name": "nfs", "nfs": {"server": "x", "path": "/"}}], "not allowed"),
        (["spec", "securityContext", "runAsNonRoot"], False, "runAsNonRoot"),
        (["spec", "securityContext", "runAsUser"], 0, "runAsUser"),
        (["spec", "securityContext", "seccompProfile"], {"type": "Unconfined"}, "seccompProfile"),
        (["spec", "securityContext", "sysctls"], [{"name": "kernel.msgmax", "value": "1"}], "sysctl"),
        (["spec", "containers", 0, "securityContext", "allowPrivilegeEscalation"], True, "allowPrivilegeEscalation"),
        (["spec", "containers", 0, "securityContext", "privileged"], True, "privileged"),
        (["spec", "containers", 0, "securityContext", "capabilities"], {"drop": ["NET_RAW"]}, "drop must include ALL"),
        (
            ["spec", "containers", 0, "securityContext", "capabilities"],
            {"drop": ["ALL"], "add": ["SYS_ADMIN"]},
            "SYS_ADMIN",
        ),
        (["spec", "containers", 0, "securityContext", "procMount"], "Unmasked", "procMount"),
        (["spec", "containers", 0, "ports"], [{"containerPort": 80, "hostPort": 80}], "hostPort"),
        (["spec", "containers", 0, "securityContext", "seLinuxOptions"], {"type": "spc_t"}, "seLinuxOptions"),
        (
            ["metadata", "annotations"],
            {"container.apparmor.security.beta.kubernetes.io/main": "unconfined"},
            "apparmor",
        ),
    ],
)
def test_each_rule_is_enforced(path, value, expected):
    problems = restricted_violations(_with(path, value))
    assert any(expected in problem for problem in problems), problems


def test_init_containers_are_checked_too():
    pod = copy.deepcopy(COMPLIANT_POD)
    pod["spec"]["initContainers"] = [{"name": "init", "image": "busybox"}]
    problems = restricted_violations(pod)
    assert any("initContainers[init]" in problem for problem in problems)


def test_workload_kinds_are_unwrapped():
    template = {"metadata": {}, "spec": COMPLIANT_POD["spec"]}
    job = {"kind": "Job", "metadata": {"name": "j"}, "spec": {"template": template}}
    cron = {"kind": "CronJob", "metadata": {"name": "c"}, "spec": {"jobTemplate": {"spec": {"template": template}}}}
    assert restricted_violations(job) == restricted_violations(cron) == []
    with pytest.raises(ValueError, match="no pod template"):
        restricted_violations({"kind": "ConfigMap", "metadata": {"name": "x"}, "data": {}})


@pytest.mark.parametrize(
    "rendering",
    ["cluster-wide", "namespaced", "helm-default", "helm-custom"],
)
def test_operator_deployment_is_restricted(rendering, cluster_wide, namespaced, helm_default, helm_custom):
    manifests = {
        "cluster-wide": cluster_wide,
        "namespaced": namespaced,
        "helm-default": helm_default,
        "helm-custom": helm_custom,
    }
    assert_restricted(render.one(manifests[rendering], "Deployment"))


def test_install_namespace_enforces_restricted(cluster_wide):
    labels = render.one(cluster_wide, "Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
