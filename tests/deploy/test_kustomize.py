"""The kustomize base and overlays build with the real kubectl 1.35 and say what they should."""

from __future__ import annotations

import pytest

from . import render


@pytest.mark.parametrize("folder", render.kustomizations(), ids=lambda p: str(p.relative_to(render.DEPLOY)))
def test_every_kustomization_builds(folder):
    assert render.kustomize(folder), f"{folder} rendered nothing"


def test_overlays_are_found():
    names = {path.name for path in render.kustomizations()}
    assert {"base", "cluster-wide", "namespaced"} <= names


def test_cluster_wide_installs_everything(cluster_wide):
    kinds = sorted(m["kind"] for m in cluster_wide)
    assert kinds.count("CustomResourceDefinition") == 4  # FineTuneJob, ModelServe and kopf's two peering kinds
    for kind in ("Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service"):
        render.one(cluster_wide, kind)
    assert render.one(cluster_wide, "ClusterKopfPeering")["metadata"]["name"] == "kubetune"
    assert not render.by_kind(cluster_wide, "Role")
    args = render.one(cluster_wide, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--all-namespaces" in args and "--peering=kubetune" in args


def test_operator_deployment_shape(cluster_wide):
    deployment = render.one(cluster_wide, "Deployment", "kubetune-operator")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    health = next(p for p in container["ports"] if p["name"] == "health")
    assert f"--liveness=http://0.0.0.0:{health['containerPort']}/healthz" in container["args"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["serviceAccountName"] == render.one(cluster_wide, "ServiceAccount")["metadata"]["name"]
    service = render.one(cluster_wide, "Service")
    assert service["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] in {p["name"] for p in container["ports"]}


def test_everything_namespaced_lands_in_the_kubetune_namespace(cluster_wide):
    cluster_scoped = {
        "Namespace",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "ClusterKopfPeering",
    }
    for manifest in cluster_wide:
        namespace = manifest["metadata"].get("namespace")
        if manifest["kind"] in cluster_scoped:
            assert namespace is None, manifest["metadata"]["name"]
        else:
            assert namespace == "kubetune", f"{manifest['kind']}/{manifest['metadata']['name']}"


def test_namespaced_overlay_watches_only_its_namespaces(namespaced):
    deployment = render.one(namespaced, "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--all-namespaces" not in args
    watched = sorted(arg.split("=", 1)[1] for arg in args if arg.startswith("--namespace="))
    assert watched == ["team-a", "team-b"]
    role_namespaces = sorted(m["metadata"]["namespace"] for m in render.by_kind(namespaced, "Role"))
    binding_namespaces = sorted(m["metadata"]["namespace"] for m in render.by_kind(namespaced, "RoleBinding"))
    peering_namespaces = sorted(m["metadata"]["namespace"] for m in render.by_kind(namespaced, "KopfPeering"))
    assert role_namespaces == binding_namespaces == peering_namespaces == watched
    assert not render.by_kind(namespaced, "ClusterKopfPeering")
    for binding in render.by_kind(namespaced, "RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kubetune-operator", "namespace": "kubetune"}]
        assert binding["roleRef"]["kind"] == "Role"
