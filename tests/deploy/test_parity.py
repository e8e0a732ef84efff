"""kustomize and Helm install the same thing for the same settings (release "kubetune" in namespace "kubetune").

Helm adds its bookkeeping labels (chart, version, managed-by) and kustomize creates the Namespace (Helm uses
`--create-namespace`); apart from that every object must be identical, RBAC compared as sets of permissions.
"""

from __future__ import annotations

import copy
import json

import pytest

from . import rbac, render
from .conftest import NAMESPACED_VALUES

HELM_ONLY_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/version")


def _normalized(manifest: dict) -> dict:
    manifest = json.loads(json.dumps(manifest))  # plain types, a deep copy
    labels = manifest["metadata"].get("labels") or {}
    for label in HELM_ONLY_LABELS:
        labels.pop(label, None)
    if manifest["kind"] in ("Role", "ClusterRole"):
        manifest["rules"] = sorted(rbac.rule_permissions(manifest.get("rules") or []))
    return manifest


def _hook(manifest: dict) -> bool:
    """Helm applies hooks after the release (the default FineTuneRuntime); kustomize ships it apart."""
    return "helm.sh/hook" in (manifest["metadata"].get("annotations") or {})


def _index(manifests: list[dict]) -> dict[tuple[str, str, str], dict]:
    return {
        (m["kind"], m["metadata"].get("namespace", ""), m["metadata"]["name"]): _normalized(m)
        for m in manifests
        if m["kind"] != "Namespace" and not _hook(m)
    }


def _compare(kustomized: list[dict], helmed: list[dict]) -> None:
    left, right = _index(kustomized), _index(helmed)
    assert sorted(left) == sorted(right), "the two installs create different objects"
    for key in left:
        if key[0] == "CustomResourceDefinition":
            # Helm adds helm.sh/resource-policy: keep (crds.keep); kustomize has no uninstall to protect against.
            right[key]["metadata"].pop("annotations", None)
        assert left[key] == right[key], f"{key} differs between kustomize and Helm"


def test_cluster_wide_overlay_equals_helm_defaults(cluster_wide, helm_default):
    _compare(cluster_wide, helm_default)


def test_namespaced_overlay_equals_helm_with_the_same_namespaces(namespaced, helm_namespaced):
    assert NAMESPACED_VALUES["watch"]["namespaces"] == ["team-a", "team-b"]  # the overlay's example namespaces
    _compare(namespaced, helm_namespaced)


def test_comparison_notices_a_difference(cluster_wide, helm_default):
    changed = copy.deepcopy(helm_default)
    deployment = next(m for m in changed if m["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "KUBETUNE_WORKERS", "value": "2"})
    with pytest.raises(AssertionError, match="Deployment"):
        _compare(cluster_wide, changed)


def test_the_default_runtime_is_the_same_in_both(helm_default):
    """Helm's post-install hook creates what `kubectl apply -k deploy/kustomize/runtimes/default` does."""
    kustomized = render.kustomize(render.KUSTOMIZE / "runtimes" / "default")
    helmed = [m for m in helm_default if _hook(m)]
    for manifest in helmed:
        manifest["metadata"].pop("annotations")
    assert _index(kustomized) == _index(helmed)
    assert [m["kind"] for m in helmed] == ["FineTuneRuntime"]


def test_namespaced_role_is_the_cluster_role_with_namespaced_peering(cluster_wide, namespaced):
    """The per-namespace Role repeats the cluster-wide rules by hand in kustomize: they must not drift apart."""
    roles = rbac.roles(cluster_wide, "ClusterRole")
    cluster = set().union(*(perms for (_, name), perms in roles.items() if name != "kubetune-operator-runtimes"))
    as_namespaced = {
        (verb, group, "kopfpeerings" if res == "clusterkopfpeerings" else res) for verb, group, res in cluster
    }
    for (namespace, _), role in rbac.roles(namespaced, "Role").items():
        assert role == as_namespaced, f"Role in {namespace} drifted from the ClusterRole"
