"""Every rendered object is valid for Kubernetes 1.35: built-in kinds by kubernetes-validate (strict: unknown
fields fail), custom resources by their CRD's schema and CEL rules (the CRD rendered alongside or in crds/)."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.support.binaries import REPO_ROOT
from tests.support.crd_schema import admission_errors

from . import render
from .conftest import CUSTOM_VALUES, NAMESPACED_VALUES

KUBERNETES_VERSION = "1.35.0"
# Kinds whose schema is neither built in nor in this repository (Argo CD's), checked by tests/deploy/test_argocd.py.
EXTERNAL_KINDS = {("argoproj.io", "Application")}


def _repo_crds() -> dict[tuple[str, str], dict]:
    crds = [yaml.safe_load(path.read_text()) for path in sorted((REPO_ROOT / "crds").glob("*.yaml"))]
    return {(crd["spec"]["group"], crd["spec"]["names"]["kind"]): crd for crd in crds}


def validation_errors(manifests: list[dict]) -> list[str]:
    """Problems of every object, custom ones checked against CRDs from the rendering or crds/."""
    crds = _repo_crds()
    crds.update(
        {
            (m["spec"]["group"], m["spec"]["names"]["kind"]): m
            for m in manifests
            if m["kind"] == "CustomResourceDefinition"
        }
    )
    errors = []
    for manifest in manifests:
        group = manifest["apiVersion"].split("/")[0] if "/" in manifest["apiVersion"] else ""
        name = f"{manifest['kind']}/{manifest['metadata'].get('name')}"
        if (group, manifest["kind"]) in crds:
            errors += [f"{name}: {error}" for error in admission_errors(crds[(group, manifest["kind"])], manifest)]
        elif (group, manifest["kind"]) not in EXTERNAL_KINDS:
            try:
                kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as error:
                errors.append(f"{name}: {'.'.join(str(p) for p in error.path)}: {error.message}")
    return errors


def _renderings() -> dict[str, callable]:
    cases = {
        f"kustomize:{p.relative_to(render.DEPLOY)}": (lambda p=p: render.kustomize(p)) for p in render.kustomizations()
    }
    cases["helm:default"] = lambda: render.helm_template()
    cases["helm:namespaced"] = lambda: render.helm_template(NAMESPACED_VALUES)
    cases["helm:custom"] = lambda: render.helm_template(CUSTOM_VALUES)
    return cases


RENDERINGS = _renderings()


@pytest.mark.parametrize("case", sorted(RENDERINGS))
def test_rendered_objects_are_valid(case):
    manifests = RENDERINGS[case]()
    assert manifests
    assert validation_errors(manifests) == []


def test_validation_catches_mistakes(cluster_wide):
    deployment = render.one(cluster_wide, "Deployment")
    broken_deployment = {**deployment, "spec": {**deployment["spec"], "replicas": "one"}}
    broken_job = {"apiVersion": "kubetune.dev/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "x"}, "spec": {}}
    problems = validation_errors([broken_deployment, broken_job])
    assert any(p.startswith("Deployment/kubetune-operator: spec.replicas") for p in problems), problems
    assert any(p.startswith("FineTuneJob/x:") for p in problems), problems


def test_the_chart_files_are_yaml():
    for path in Path(render.CHART).rglob("*.yaml"):
        if "templates" not in path.parts:
            list(yaml.safe_load_all(path.read_text()))
