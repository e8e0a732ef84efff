"""The kustomize base and overlays build with the real kubectl 1.35 and say what they should."""

from __future__ import annotations

import pytest

from . import render


def _env(deployment: dict) -> dict[str, str]:
    return {item["name"]: item.get("value") for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


@pytest.mark.parametrize("folder", render.kustomizations(), ids=lambda p: str(p.relative_to(render.DEPLOY)))
def test_every_kustomization_builds(folder):
    assert render.kustomize(folder), f"{folder} rendered nothing"


def test_overlays_are_found():
    names = {path.name for path in render.kustomizations()}
    assert {"base", "cluster-wide", "namespaced"} <= names


def test_cluster_wide_installs_everything(cluster_wide):
    kinds = sorted(m["kind"] for m in cluster_wide)
    assert kinds.count("CustomResourceDefinition") == 5  # FineTuneJob, ModelServe, FineTuneRuntime, kopf's two
    for kind in ("Namespace", "ServiceAccount", "Deployment", "Service"):
        render.one(cluster_wide, kind)
    for name in ("kubetune-operator", "kubetune-operator-runtimes"):
        render.one(cluster_wide, "ClusterRole", name)
        render.one(cluster_wide, "ClusterRoleBinding", name)
    assert not render.by_kind(cluster_wide, "Role")
    env = _env(render.one(cluster_wide, "Deployment"))
    assert "KUBETUNE_WATCH_NAMESPACES" not in env and env["KUBETUNE_PEERING"] == "kubetune"


@pytest.mark.parametrize("overlay", ["cluster-wide", "namespaced"])
def test_one_apply_creates_everything(overlay):
    """`kubectl apply -k` maps every object's kind before it creates anything, so an object of a kind whose CRD is
    in the same overlay fails the first apply ("no matches for kind ... ensure CRDs are installed first"). The
    overlays therefore hold no kopf peering object: the operator creates its own at startup (tests/cluster/
    test_install.py applies each overlay once on a fresh API server)."""
    manifests = render.kustomize(render.OVERLAYS / overlay)
    defined = {
        (crd["spec"]["group"], crd["spec"]["names"]["kind"])
        for crd in render.by_kind(manifests, "CustomResourceDefinition")
    }
    needing_crd = [
        f"{m['kind']}/{m['metadata']['name']}"
        for m in manifests
        if (m["apiVersion"].split("/")[0], m["kind"]) in defined
    ]
    assert needing_crd == []


def test_operator_deployment_shape(cluster_wide):
    deployment = render.one(cluster_wide, "Deployment", "kubetune-operator")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    health = next(p for p in container["ports"] if p["name"] == "health")
    metrics = next(p for p in container["ports"] if p["name"] == "metrics")
    env = _env(deployment)
    assert env["KUBETUNE_LIVENESS_ENDPOINT"] == f"http://0.0.0.0:{health['containerPort']}/healthz"
    assert env["KUBETUNE_METRICS_PORT"] == str(metrics["containerPort"])
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
    }
    for manifest in cluster_wide:
        namespace = manifest["metadata"].get("namespace")
        if manifest["kind"] in cluster_scoped:
            assert namespace is None, manifest["metadata"]["name"]
        else:
            assert namespace == "kubetune", f"{manifest['kind']}/{manifest['metadata']['name']}"


def test_namespaced_overlay_watches_only_its_namespaces(namespaced):
    watched = sorted(_env(render.one(namespaced, "Deployment"))["KUBETUNE_WATCH_NAMESPACES"].split(","))
    assert watched == ["team-a", "team-b"]
    role_namespaces = sorted(m["metadata"]["namespace"] for m in render.by_kind(namespaced, "Role"))
    binding_namespaces = sorted(m["metadata"]["namespace"] for m in render.by_kind(namespaced, "RoleBinding"))
    assert role_namespaces == binding_namespaces == watched
    # Nothing cluster-wide but reading FineTuneRuntimes (cluster-scoped, admin-owned).
    assert [m["metadata"]["name"] for m in render.by_kind(namespaced, "ClusterRole")] == ["kubetune-operator-runtimes"]
    assert [m["metadata"]["name"] for m in render.by_kind(namespaced, "ClusterRoleBinding")] == [
        "kubetune-operator-runtimes"
    ]
    for binding in render.by_kind(namespaced, "RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kubetune-operator", "namespace": "kubetune"}]
        assert binding["roleRef"]["kind"] == "Role"


def test_the_deployment_command_is_a_kubetune_command(cluster_wide, helm_custom):
    from kubetune.cli import build_parser

    for manifests in (cluster_wide, helm_custom):
        container = render.one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]
        program, *arguments = container["command"] + container.get("args", [])
        assert program == "kubetune"
        assert build_parser().parse_args(arguments).command == "operator"


def test_operator_settings_accept_every_rendering(cluster_wide, namespaced, helm_custom):
    """The Deployment's KUBETUNE_* variables are settings the operator knows, with values it accepts."""
    from kubetune.operator.settings import ENV_PREFIX, OperatorSettings

    for manifests in (cluster_wide, namespaced, helm_custom):
        env = {k: v for k, v in _env(render.one(manifests, "Deployment")).items() if k.startswith(ENV_PREFIX)}
        unknown = {name for name in env if name.removeprefix(ENV_PREFIX).lower() not in OperatorSettings.model_fields}
        assert not unknown, f"the operator has no such settings: {sorted(unknown)}"
        settings = OperatorSettings.from_env(env)
        assert settings.peering and settings.liveness_endpoint.endswith("/healthz")
    assert OperatorSettings.from_env(_env(render.one(namespaced, "Deployment"))).watch_namespaces == (
        "team-a",
        "team-b",
    )


def test_the_install_docs_overlay_example_builds(tmp_path):
    """docs/install.md shows how to pin images with an own overlay; it must build and change what it says."""
    text = (render.REPO_ROOT / "docs" / "install.md").read_text()
    block = text.split("# my-overlay/kustomization.yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "deploy").symlink_to(render.DEPLOY)
    overlay = tmp_path / "my-overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(block)
    deployment = render.one(render.kustomize(overlay), "Deployment")
    env = _env(deployment)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].startswith("registry.example.com/")
    assert env["KUBETUNE_TRAINER_IMAGE"].startswith("registry.example.com/kubetune/trainer:")
    assert env["KUBETUNE_SERVER_IMAGE"].startswith("registry.example.com/kubetune/server:")
    assert env["KUBETUNE_SERVER_VLLM_IMAGE"].startswith("registry.example.com/kubetune/server-vllm:")


def test_the_install_docs_settings_overlay_reaches_the_operator(tmp_path):
    """docs/install.md's overlay that adds the newer settings builds, and the operator reads what it says."""
    from kubetune.operator.settings import OperatorSettings

    text = (render.REPO_ROOT / "docs" / "install.md").read_text()
    marker = "# my-overlay/kustomization.yaml (docs example: tests/deploy/test_kustomize.py renders it)\n"
    block = text.split(marker, 1)[1].split("```", 1)[0]
    (tmp_path / "deploy").symlink_to(render.DEPLOY)
    overlay = tmp_path / "my-overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(block)
    settings = OperatorSettings.from_env(_env(render.one(render.kustomize(overlay), "Deployment")))
    assert (settings.trainer_cpu_request, settings.trainer_memory_request, settings.pod_fs_group) == ("1", "16Gi", 1000)
