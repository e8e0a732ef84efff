"""Argo CD health checks run in a real Lua 5.1 interpreter (as Argo CD's gopher-lua), plus the argocd-cm snippet
and the example Applications."""

from __future__ import annotations

import json
from pathlib import Path

import lupa.lua51
import pytest
import yaml
from kubetune.api.resources import parse_resource

from . import render

ARGOCD = render.DEPLOY / "argocd"
HEALTH = ARGOCD / "health" / "kubetune.dev"
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def run_health(kind: str, obj: dict) -> dict:
    """Run a health.lua as Argo CD does: the object (as from JSON) in the global `obj`, a {status, message} back."""
    lua = lupa.lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(json.loads(json.dumps(obj)), recursive=True)
    result = lua.execute((HEALTH / kind / "health.lua").read_text())
    outcome = dict(result.items())
    assert outcome["status"] in ARGO_STATUSES
    assert isinstance(outcome.get("message"), str) and outcome["message"]
    return outcome


def _ftj(status=None, suspend=False):
    obj = {"apiVersion": "kubetune.dev/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "a", "generation": 1}}
    obj["spec"] = {"suspend": True} if suspend else {}
    if status is not None:
        obj["status"] = status
    return obj


FINETUNEJOB_CASES = [
    (_ftj(), "Progressing", "Waiting for the kubetune operator"),
    (_ftj(suspend=True), "Suspended", "Suspended before"),
    (_ftj({"phase": "Pending"}), "Progressing", "Waiting for the trainer"),
    (_ftj({"phase": "Pending", "message": "Job created"}), "Progressing", "Job created"),
    (
        _ftj({"phase": "Running", "progress": {"step": 12, "totalSteps": 48, "percent": 25, "etaSeconds": 130.0}}),
        "Progressing",
        "Training: 25% (step 12/48, about 3 min left)",
    ),
    (_ftj({"phase": "Running"}), "Progressing", "Training"),
    (_ftj({"phase": "Running"}, suspend=True), "Suspended", "spec.suspend"),
    (_ftj({"phase": "Suspended"}, suspend=True), "Suspended", "checkpoints are kept"),
    (_ftj({"phase": "Suspended"}), "Progressing", "Resuming"),
    (_ftj({"phase": "Succeeded", "metrics": {"evalLoss": 1.23456}}), "Healthy", "eval loss 1.2346"),
    (_ftj({"phase": "Succeeded"}), "Healthy", "Training succeeded"),
    (_ftj({"phase": "Succeeded"}, suspend=True), "Healthy", "Training succeeded"),
    (_ftj({"phase": "Failed", "message": "OutOfMemory: lower batchSize"}), "Degraded", "OutOfMemory"),
    (
        _ftj({"phase": "Failed", "conditions": [{"type": "Failed", "status": "True", "message": "bad dataset"}]}),
        "Degraded",
        "bad dataset",
    ),
    (_ftj({"phase": "Failed"}), "Degraded", "Training failed"),
    (_ftj({"phase": "Exploded"}), "Unknown", "Exploded"),
]


@pytest.mark.parametrize(("obj", "status", "message"), FINETUNEJOB_CASES)
def test_finetunejob_health(obj, status, message):
    outcome = run_health("FineTuneJob", obj)
    assert outcome["status"] == status
    assert message in outcome["message"]


def _msv(status=None, generation=2):
    obj = {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "ModelServe",
        "metadata": {"name": "s", "generation": generation},
    }
    obj["spec"] = {"adapters": [{"name": "a", "fineTuneJobRef": {"name": "a"}}]}
    if status is not None:
        obj["status"] = status
    return obj


READY = {"phase": "Ready", "observedGeneration": 2, "readyReplicas": 2, "replicas": 2, "url": "http://s.ns.svc:8000"}
MODELSERVE_CASES = [
    (_msv(), "Progressing", "Waiting for the kubetune operator"),
    (_msv(READY), "Healthy", "Serving 2/2 replicas at http://s.ns.svc:8000"),
    (_msv({**READY, "observedGeneration": 1}), "Progressing", "generation 2"),
    (_msv({key: value for key, value in READY.items() if key != "observedGeneration"}), "Progressing", "generation 2"),
    (_msv(READY, generation=None), "Healthy", "Serving"),
    (_msv({"phase": "WaitingForAdapters", "observedGeneration": 2}), "Progressing", "FineTuneJobs"),
    (_msv({"phase": "Deploying", "observedGeneration": 2, "message": "1/2 ready"}), "Progressing", "1/2 ready"),
    (_msv({"phase": "Pending", "observedGeneration": 2}), "Progressing", "Starting"),
    (_msv({"phase": "Failed", "observedGeneration": 2, "message": "base model mismatch"}), "Degraded", "mismatch"),
    (_msv({"phase": "Failed", "observedGeneration": 1}), "Progressing", "generation 2"),
    (_msv({"phase": "Sideways", "observedGeneration": 2}), "Unknown", "Sideways"),
]


@pytest.mark.parametrize(("obj", "status", "message"), MODELSERVE_CASES)
def test_modelserve_health(obj, status, message):
    if obj["metadata"]["generation"] is None:
        del obj["metadata"]["generation"]
    outcome = run_health("ModelServe", obj)
    assert outcome["status"] == status
    assert message in outcome["message"]


def test_argocd_cm_patch_embeds_the_same_lua():
    patch = yaml.safe_load((ARGOCD / "argocd-cm-patch.yaml").read_text())
    assert patch["metadata"] == {"name": "argocd-cm", "namespace": "argocd"}
    expected = {
        f"resource.customizations.health.kubetune.dev_{path.parent.name}": path.read_text()
        for path in sorted(HEALTH.glob("*/health.lua"))
    }
    assert patch["data"] == expected


def test_every_kind_with_a_status_has_a_health_check():
    """A kind without status (FineTuneRuntime, admin configuration) has no health to report: Argo CD's default."""
    crds = [yaml.safe_load(p.read_text()) for p in (render.REPO_ROOT / "crds").glob("*.yaml")]
    kinds = {
        crd["spec"]["names"]["kind"] for crd in crds if "status" in crd["spec"]["versions"][0].get("subresources", {})
    }
    assert {path.parent.name for path in HEALTH.glob("*/health.lua")} == kinds


def _example() -> list[dict]:
    return render.kustomize(ARGOCD / "example")


def test_example_syncs_jobs_before_servers():
    waves = {m["kind"]: int(m["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]) for m in _example()}
    assert waves == {"FineTuneJob": 0, "ModelServe": 1}


def test_example_resources_are_valid_api_objects():
    manifests = _example()
    for manifest in manifests:
        parse_resource(manifest)
    job = next(m for m in manifests if m["kind"] == "FineTuneJob")
    serve = next(m for m in manifests if m["kind"] == "ModelServe")
    assert serve["spec"]["adapters"][0]["fineTuneJobRef"]["name"] == job["metadata"]["name"]


@pytest.mark.parametrize("name", ["application.yaml", "kubetune-application.yaml"])
def test_applications_point_at_folders_of_this_repository(name):
    app = yaml.safe_load((ARGOCD / name).read_text())
    assert app["apiVersion"] == "argoproj.io/v1alpha1" and app["kind"] == "Application"
    path = Path(render.REPO_ROOT / app["spec"]["source"]["path"])
    assert (path / "kustomization.yaml").is_file() or (path / "Chart.yaml").is_file()
    assert app["spec"]["destination"]["namespace"]
    if "helm" in app["spec"]["source"]:
        values = app["spec"]["source"]["helm"]["valuesObject"]
        assert render.helm_template(values)  # the chart accepts them (schema included)
