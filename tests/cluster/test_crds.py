"""The real API server is the judge of the CRDs: every generated CRD and every copy users install is accepted,
its defaults and CEL rules behave as our offline checks claim, invalid specs are refused with the field named,
and every example is admitted.

Checks use `dryRun=All` where they can: the server runs all validation and admission, and stores nothing.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.api.conftest import VALID_FTJ_SPEC, VALID_MSV_SPEC, example_documents
from tests.api.test_crd_defaults import _limits, _parent
from tests.api.test_validation import CASES
from tests.support.crd_schema import default_errors
from tests.support.kube.patching import merge_patch
from tests.support.kube.server import FTJ, MSV, KubeError, KubeTestClient

REPO = Path(__file__).resolve().parents[2]
CRD_COPIES = sorted(
    [
        *(REPO / "crds").glob("*.yaml"),
        *(REPO / "deploy/kustomize/base/crds").glob("*.yaml"),
        *(REPO / "deploy/helm/kubetune/files/crds").glob("*.yaml"),
    ]
)
CRDS_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
RESOURCES = {"FineTuneJob": FTJ, "ModelServe": MSV}
VALID = {"FineTuneJob": VALID_FTJ_SPEC, "ModelServe": VALID_MSV_SPEC}


def _dry_run_create(kube: KubeTestClient, path: str, body: dict[str, Any]) -> tuple[int, str]:
    """(status code, message) of a create the server validates and admits but does not store."""
    response = kube.http.post(path, params={"dryRun": "All"}, json=body)
    return response.status_code, response.json().get("message", "")


def _in_own_group(crd: dict[str, Any], group: str) -> dict[str, Any]:
    """The same CRD under another API group: a dry-run create then validates it from scratch, although the
    real one is installed already."""
    moved = copy.deepcopy(crd)
    moved["spec"]["group"] = group
    moved["metadata"] = {"name": f"{crd['spec']['names']['plural']}.{group}"}
    return moved


@pytest.mark.parametrize("path", CRD_COPIES, ids=[str(p.relative_to(REPO)) for p in CRD_COPIES])
def test_every_crd_users_install_is_accepted(kube, path: Path):
    crd = yaml.safe_load(path.read_text())
    code, message = _dry_run_create(kube, CRDS_PATH, _in_own_group(crd, "check.kubetune.dev"))
    assert code == 201, f"{path.name} refused: {message}"


def _synthetic_crd(child: dict[str, Any]) -> dict[str, Any]:
    schema = {"type": "object", "properties": {"spec": _parent(child)}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.defaults.kubetune.dev"},
        "spec": {
            "group": "defaults.kubetune.dev",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}],
        },
    }


_GUARDED = {"rule": "!has(self.low) || !has(self.high) || self.low <= self.high", "message": "guarded"}
DEFAULT_CASES = {
    "empty-default-rule-reads-fields": _limits({}),
    "complete-default": _limits({"low": 1, "high": 2}),
    "default-breaks-rule": _limits({"low": 3, "high": 2}),
    "default-breaks-schema": _limits({"low": 11, "high": 20}),
    "unknown-field-in-default": _limits({"low": 1, "high": 2, "middle": 3}),
    "empty-default-guarded-rule": _limits({}, [_GUARDED]),
    "immutability-rule": _limits({"low": 1, "high": 2}, [{"rule": "self == oldSelf", "message": "immutable"}]),
    "transition-rule-reads-missing-field": _limits(
        {"low": 1}, [{"rule": "self.high == oldSelf.high", "message": "high is immutable"}]
    ),
}


@pytest.mark.parametrize("case", sorted(DEFAULT_CASES))
def test_the_default_checker_agrees_with_the_server(kube, case: str):
    """tests/support/crd_schema.default_errors (used on our CRDs offline) says what the server says."""
    child = DEFAULT_CASES[case]
    code, message = _dry_run_create(kube, CRDS_PATH, _synthetic_crd(child))
    assert code in (201, 422), message
    offline = default_errors({"type": "object", "properties": {"spec": _parent(child)}})
    assert (code == 201) == (offline == []), f"server {code} {message!r}; checker {offline}"


def _resource(kind: str, ns: str, spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    group_version, plural = RESOURCES[kind]
    body = {"apiVersion": group_version, "kind": kind, "metadata": {"name": "probe", "namespace": ns}, "spec": spec}
    return f"/apis/{group_version}/namespaces/{ns}/{plural}", body


SERVER_CASES = [case for case in CASES if case[5]]
MODEL_ONLY_CASES = [case for case in CASES if not case[5]]


@pytest.mark.parametrize(
    ("case_id", "kind", "patch", "field", "fragment", "crd"), SERVER_CASES, ids=[c[0] for c in SERVER_CASES]
)
def test_the_server_refuses_what_the_crd_expresses(kube, ns, case_id, kind, patch, field, fragment, crd):
    """Each invalid spec the offline CRD check refuses is refused by the real server too, naming the field."""
    path, body = _resource(kind, ns, merge_patch(VALID[kind], patch))
    code, message = _dry_run_create(kube, path, body)
    assert code == 422, f"{case_id}: the server answered {code}: {message}"
    top = field.split(".")[0].split("[")[0]
    assert f"spec.{top}" in message or field == "spec", f"{case_id}: {message}"


@pytest.mark.parametrize(
    ("case_id", "kind", "patch", "field", "fragment", "crd"), MODEL_ONLY_CASES, ids=[c[0] for c in MODEL_ONLY_CASES]
)
def test_model_only_rules_pass_the_server(kube, ns, case_id, kind, patch, field, fragment, crd):
    """What only the models catch gets past the server (the operator marks it InvalidSpec); if the server ever
    refuses one, move the case to its CRD layer."""
    path, body = _resource(kind, ns, merge_patch(VALID[kind], patch))
    code, message = _dry_run_create(kube, path, body)
    if code == 422 and "unknown field" in message:
        pytest.fail(f"{case_id}: the server prunes or refuses unknown fields itself: {message}")
    assert code == 201, f"{case_id}: the server refused a case marked model-only: {message}"


EXAMPLES = example_documents()


@pytest.mark.parametrize(("where", "document"), EXAMPLES, ids=[where for where, _ in EXAMPLES])
def test_every_example_is_admitted(kube, ns, where: str, document: dict[str, Any]):
    group_version, plural = RESOURCES[document["kind"]]
    body = {**document, "metadata": {**document["metadata"], "namespace": ns}}
    code, message = _dry_run_create(kube, f"/apis/{group_version}/namespaces/{ns}/{plural}", body)
    assert code == 201, f"{where}: {message}"


def test_the_server_fills_in_complete_defaults(kube, ns):
    _, body = _resource("ModelServe", ns, VALID_MSV_SPEC)
    stored = kube.create(MSV, ns, body)["spec"]
    assert stored["generation"]["maxNewTokens"] == 256 and stored["generation"]["maxNewTokensLimit"] == 2048
    # decoding controls stay unset (off): objects stored before them read back the same
    assert not {"topK", "repetitionPenalty", "frequencyPenalty", "presencePenalty"} & set(stored["generation"])
    assert stored["service"] == {"type": "ClusterIP", "port": 8000}


def test_only_suspend_may_change(kube, ns):
    _, body = _resource("FineTuneJob", ns, VALID_FTJ_SPEC)
    kube.create(FTJ, ns, body)
    kube.patch(FTJ, ns, "probe", {"spec": {"suspend": True}})
    with pytest.raises(KubeError) as refused:
        kube.patch(FTJ, ns, "probe", {"spec": {"training": {"epochs": 5}}})
    assert refused.value.code == 422
    assert "spec.training is immutable after creation" in str(refused.value)
