"""The Helm chart lints, renders with default and non-default values, and its schema rejects mistakes."""

from __future__ import annotations

import json

import pytest
import yaml
from kubetune.operator.settings import OperatorSettings

from tests.support.binaries import REPO_ROOT

from . import render
from .conftest import CUSTOM_VALUES, NAMESPACED_VALUES

CHART_META = yaml.safe_load((render.CHART / "Chart.yaml").read_text())
APP_VERSION = CHART_META["appVersion"]


@pytest.mark.parametrize("values", [{}, NAMESPACED_VALUES, CUSTOM_VALUES], ids=["default", "namespaced", "custom"])
def test_helm_lint_strict(values):
    output = render.helm_lint(values)
    assert "0 chart(s) failed" in output


def test_chart_is_helm_v2_with_a_kube_version():
    assert CHART_META["apiVersion"] == "v2"
    assert CHART_META["kubeVersion"].startswith(">=1.30")


def _container(manifests):
    return render.one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def _env(container):
    return {item["name"]: item.get("value") for item in container["env"]}


def test_images_default_to_the_app_version(helm_default):
    container = _container(helm_default)
    assert container["image"] == f"ghcr.io/kubetune/kubetune-operator:{APP_VERSION}"
    env = _env(container)
    assert env["KUBETUNE_TRAINER_IMAGE"] == f"ghcr.io/kubetune/kubetune-trainer:{APP_VERSION}"
    assert env["KUBETUNE_SERVER_IMAGE"] == f"ghcr.io/kubetune/kubetune-server:{APP_VERSION}"


def test_default_install_is_cluster_wide_with_kept_crds(helm_default):
    assert "KUBETUNE_WATCH_NAMESPACES" not in _env(_container(helm_default))
    assert not render.by_kind(helm_default, "Role")
    assert not render.by_kind(helm_default, "ClusterKopfPeering"), "the operator creates its peering object"
    kubetune_crds = [
        m for m in render.by_kind(helm_default, "CustomResourceDefinition") if m["spec"]["group"] == "kubetune.dev"
    ]
    assert len(kubetune_crds) == 3  # FineTuneJob, ModelServe, FineTuneRuntime
    for crd in kubetune_crds:
        assert crd["metadata"]["annotations"] == {
            "helm.sh/resource-policy": "keep",
            "argocd.argoproj.io/sync-options": "Delete=false,Prune=false",
        }


def test_chart_crds_are_the_generated_crds(helm_default):
    """The template passes the generated CRDs through fromYaml/toYaml: nothing may change on the way."""
    for path in sorted((REPO_ROOT / "crds").glob("*.yaml")):
        expected = yaml.safe_load(path.read_text())
        rendered = render.one(helm_default, "CustomResourceDefinition", expected["metadata"]["name"])
        rendered = json.loads(json.dumps(rendered))
        rendered["metadata"].pop("annotations")
        assert rendered == expected, f"{path.name} changed through the Helm template"


def test_custom_values_reach_the_deployment(helm_custom):
    operator = CUSTOM_VALUES["operator"]
    deployment = render.one(helm_custom, "Deployment", "kubetune-operator")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "registry.example.com/kubetune/operator:1.2.3"
    assert container["imagePullPolicy"] == "Always"
    assert pod["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert pod["nodeSelector"] == operator["nodeSelector"]
    assert pod["tolerations"] == operator["tolerations"]
    assert pod["affinity"] == operator["affinity"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["serviceAccountName"] == "tuner"
    assert deployment["spec"]["template"]["metadata"]["annotations"] == operator["podAnnotations"]
    assert deployment["spec"]["template"]["metadata"]["labels"]["team"] == "platform"
    assert container["resources"] == operator["resources"]
    assert container["command"] == ["kubetune", "operator"]
    assert container["args"] == ["--verbose"]
    assert {"name": "health", "containerPort": 8181, "protocol": "TCP"} in container["ports"]
    assert "metrics" not in {port["name"] for port in container["ports"]}
    assert _env(container) == {
        "KUBETUNE_TRAINER_IMAGE": "registry.example.com/kubetune/trainer:1.2.3-cuda",
        "KUBETUNE_SERVER_IMAGE": f"registry.example.com/kubetune/server:{APP_VERSION}",
        "KUBETUNE_SERVER_VLLM_IMAGE": f"ghcr.io/kubetune/kubetune-server-vllm:{APP_VERSION}",
        "KUBETUNE_IMAGE_PULL_POLICY": "Always",
        "KUBETUNE_DEFAULT_RUNTIME": "default",
        "KUBETUNE_PEERING": "kubetune-prod",
        "KUBETUNE_LIVENESS_ENDPOINT": "http://0.0.0.0:8181/healthz",
        "KUBETUNE_METRICS_PORT": "0",
        "KUBETUNE_WATCH_NAMESPACES": "ml-prod",
        "KUBETUNE_TRAINER_CPU": "8",
        "KUBETUNE_TRAINER_MEMORY": "64Gi",
        "KUBETUNE_TRAINER_CPU_REQUEST": "",
        "KUBETUNE_TRAINER_MEMORY_REQUEST": "8Gi",
        "KUBETUNE_POD_FS_GROUP": "1000",
        "KUBETUNE_SERVER_CPU": "4",
        "KUBETUNE_CLUSTER_DOMAIN": "corp.example",
        "KUBETUNE_WORKERS": "4",
        "EXTRA_SETTING": "1",
    }


def test_the_operator_reads_the_rendered_settings(helm_default, helm_custom):
    """The newer settings reach the operator as the chart renders them: by default none is rendered (the operator's
    own defaults apply: 1 CPU / 4Gi trainer requests, no fsGroup); set, "" means no request."""
    defaults = OperatorSettings.from_env(_env(_container(helm_default)))
    assert (defaults.trainer_cpu_request, defaults.trainer_memory_request, defaults.pod_fs_group) == ("1", "4Gi", None)
    assert not defaults.leader_election
    custom = OperatorSettings.from_env(_env(_container(helm_custom)))
    assert (custom.trainer_cpu_request, custom.trainer_memory_request, custom.pod_fs_group) == (None, "8Gi", 1000)


def test_custom_values_reach_the_other_objects(helm_custom):
    assert not render.by_kind(helm_custom, "Service"), "metrics.enabled=false must drop the Service"
    account = render.one(helm_custom, "ServiceAccount", "tuner")
    assert account["metadata"]["annotations"] == {"iam.example.com/role": "kubetune"}
    role = render.one(helm_custom, "Role")
    assert role["metadata"]["namespace"] == "ml-prod"
    binding = render.one(helm_custom, "RoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "tuner", "namespace": "kubetune"}]
    assert not render.by_kind(helm_custom, "KopfPeering"), "the operator creates its peering objects"
    for crd in render.by_kind(helm_custom, "CustomResourceDefinition"):
        assert "helm.sh/resource-policy" not in (crd["metadata"].get("annotations") or {})


def test_switches_turn_objects_off():
    manifests = render.helm_template(
        {
            "crds": {"install": False, "keep": True},
            "rbac": {"create": False},
            "serviceAccount": {"create": False, "name": "existing"},
        },
        include_crds=False,
    )
    kinds = {m["kind"] for m in manifests}
    assert not kinds & {
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    }
    assert render.one(manifests, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "existing"


def test_release_name_changes_the_object_names():
    manifests = render.helm_template({"fullnameOverride": "tuning"})
    assert render.one(manifests, "Deployment")["metadata"]["name"] == "tuning-operator"
    assert render.one(manifests, "ClusterRoleBinding", "tuning-operator")["roleRef"]["name"] == "tuning-operator"
    assert render.one(manifests, "ClusterRoleBinding", "tuning-operator-runtimes")["roleRef"]["name"] == (
        "tuning-operator-runtimes"
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"workloadImagePullPolicy": "Sometimes"}, "/workloadImagePullPolicy"),
        ({"trainer": {"defaultResources": {"memory": "lots"}}}, "/trainer/defaultResources/memory"),
        ({"operator": {"workers": 0}}, "/operator/workers"),
        ({"watch": {"namespaces": ["Team_A"]}}, "/watch/namespaces/0"),
        ({"crds": {"install": "yes"}}, "/crds/install"),
        ({"operator": {"imageTag": "1.0"}}, "imageTag"),
        ({"trainer": {"image": {"repository": ""}}}, "/trainer/image/repository"),
        ({"operator": {"metrics": {"port": 70000}}}, "/operator/metrics/port"),
        ({"workloadFsGroup": 0}, "/workloadFsGroup"),
        ({"trainer": {"defaultRequests": {"cpu": "one"}}}, "/trainer/defaultRequests/cpu"),
    ],
)
def test_schema_rejects_bad_values(values, message):
    with pytest.raises(render.RenderError, match=message):
        render.helm_template(values)


def test_every_value_is_documented():
    """Each value of values.yaml has a comment right above it; a commented map (resources) covers its children."""
    lines = (render.CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    documented_maps: list[int] = []  # indents of commented map values whose children need no comment of their own
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "-")) or ":" not in stripped:
            continue
        indent = len(line) - len(line.lstrip())
        documented_maps = [level for level in documented_maps if level < indent]
        commented = lines[index - 1].strip().startswith("#")
        if stripped.endswith(":"):
            if commented:
                documented_maps.append(indent)
            continue
        if not commented and not documented_maps:
            undocumented.append(stripped)
    assert not undocumented, f"values without a comment: {undocumented}"


def test_schema_covers_every_value():
    schema = json.loads((render.CHART / "values.schema.json").read_text())
    values = yaml.safe_load((render.CHART / "values.yaml").read_text())

    def walk(node, schema_node, path):
        if isinstance(node, dict) and schema_node.get("additionalProperties") is False:
            for key, child in node.items():
                assert key in schema_node["properties"], f"{path}.{key} is not in values.schema.json"
                walk(child, schema_node["properties"][key], f"{path}.{key}")

    walk(values, schema, "")


def test_install_dry_run_prints_the_notes():
    output = render.helm("install", "kubetune", str(render.CHART), "--namespace", "kubetune", "--dry-run=client")
    assert "rollout status deployment/kubetune-operator" in output


def test_packaged_chart_renders_the_same(tmp_path, helm_default):
    render.helm("package", str(render.CHART), "--destination", str(tmp_path))
    (archive,) = tmp_path.glob("kubetune-*.tgz")
    text = render.helm("template", render.RELEASE, str(archive), "--namespace", render.NAMESPACE, "--include-crds")
    assert render.parse_documents(text) == helm_default


def test_old_kubernetes_is_refused():
    with pytest.raises(render.RenderError, match="kubeVersion"):
        render.helm("template", "kubetune", str(render.CHART), "--kube-version", "1.29.0")
