"""Renders shared by the deploy tests (each `helm template` / `kubectl kustomize` takes about a second)."""

from __future__ import annotations

import pytest

from . import render

# Non-default values that exercise every switch of the chart; the namespaced overlay's settings are the subset
# `NAMESPACED_VALUES`, so kustomize and Helm can be compared for that mode too.
NAMESPACED_VALUES = {"watch": {"namespaces": ["team-a", "team-b"]}}
HA_VALUES = {"operator": {"replicas": 2, "leaderElection": {"enabled": True}}}
CUSTOM_VALUES = {
    "watch": {"namespaces": ["ml-prod"]},
    "operator": {
        "image": {"repository": "registry.example.com/kubetune/operator", "tag": "1.2.3", "pullPolicy": "Always"},
        "imagePullSecrets": ["registry-credentials"],
        "peering": {"name": "kubetune-prod"},
        "healthPort": 8181,
        "metrics": {"enabled": False, "port": 9191},
        "workers": 4,
        "verbose": True,
        "resources": {"requests": {"cpu": "200m", "memory": "300Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}},
        "nodeSelector": {"kubernetes.io/os": "linux", "node-role.example.com/system": "true"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "system", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}
                    ]
                }
            }
        },
        "priorityClassName": "system-cluster-critical",
        "podAnnotations": {"prometheus.io/scrape": "true"},
        "podLabels": {"team": "platform"},
        "extraEnv": [{"name": "EXTRA_SETTING", "value": "1"}],
    },
    "trainer": {
        "image": {"repository": "registry.example.com/kubetune/trainer", "tag": "1.2.3-cuda"},
        "defaultResources": {"cpu": "8", "memory": "64Gi"},
        "defaultRequests": {"cpu": "", "memory": "8Gi"},
    },
    "workloadFsGroup": 1000,
    "server": {
        "image": {"repository": "registry.example.com/kubetune/server", "tag": ""},
        "defaultResources": {"cpu": "4", "memory": ""},
    },
    "workloadImagePullPolicy": "Always",
    "clusterDomain": "corp.example",
    "serviceAccount": {"create": True, "name": "tuner", "annotations": {"iam.example.com/role": "kubetune"}},
    "crds": {"install": True, "keep": False},
}


@pytest.fixture(scope="session")
def cluster_wide() -> list[render.Manifest]:
    return render.kustomize(render.OVERLAYS / "cluster-wide")


@pytest.fixture(scope="session")
def namespaced() -> list[render.Manifest]:
    return render.kustomize(render.OVERLAYS / "namespaced")


@pytest.fixture(scope="session")
def helm_default() -> list[render.Manifest]:
    return render.helm_template()


@pytest.fixture(scope="session")
def helm_namespaced() -> list[render.Manifest]:
    return render.helm_template(NAMESPACED_VALUES)


@pytest.fixture(scope="session")
def helm_custom() -> list[render.Manifest]:
    return render.helm_template(CUSTOM_VALUES)
