"""The generated CRDs: up to date, structural, valid CustomResourceDefinitions, documented, with working CEL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubetune import generate
from kubetune.api import FineTuneJob, ModelServe, parse_resource
from kubetune.api.crd import all_crds, finetunejob_crd, modelserve_crd

from tests.api.conftest import REPO, VALID_FTJ_SPEC, example_documents
from tests.support.crd_schema import admission_errors, compile_rule

KUBERNETES_VERSIONS = ["1.30", "1.37"]


def _schema(crd: dict[str, Any]) -> dict[str, Any]:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _walk(node: Any, path: str = ""):
    """Yield (path, schema node) for every node below a schema."""
    if isinstance(node, dict):
        yield path, node
        for name, sub in node.get("properties", {}).items():
            yield from _walk(sub, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            yield from _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            yield from _walk(node["additionalProperties"], f"{path}{{}}")


CRDS = {"FineTuneJob": finetunejob_crd(), "ModelServe": modelserve_crd()}


def test_generated_files_are_up_to_date() -> None:
    stale = generate.stale(REPO)
    assert not stale, f"{', '.join(stale)} differ from the API models: run make generate"


def test_check_command_fails_on_drift(tmp_path: Path) -> None:
    generate.write(tmp_path)
    cli = [sys.executable, "-m", "kubetune.cli", "crds", "--check", "--root", str(tmp_path)]
    assert subprocess.run(cli, capture_output=True).returncode == 0
    target = tmp_path / "crds" / "finetunejobs.kubetune.dev.yaml"
    target.write_text(target.read_text() + "# edited by hand\n")
    result = subprocess.run(cli, capture_output=True, text=True)
    assert result.returncode == 1
    assert "run make generate" in result.stderr


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", sorted(all_crds()))
def test_crd_is_a_valid_custom_resource_definition(name: str, version: str) -> None:
    kubernetes_validate.validate(all_crds()[name], version, strict=True)


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_schema_is_structural(kind: str) -> None:
    for path, node in _walk(_schema(CRDS[kind])):
        assert "$ref" not in node and "anyOf" not in node and "allOf" not in node and "oneOf" not in node, path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{kind}{path} has no type"
        if node.get("type") == "object" and "properties" in node:
            assert "additionalProperties" not in node, path


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_every_field_is_documented_for_kubectl_explain(kind: str) -> None:
    undocumented = [
        path
        for path, node in _walk(_schema(CRDS[kind]).get("properties", {}).get("spec", {}), ".spec")
        if not node.get("description") and not path.endswith("[]") and not path.endswith("{}")
    ]
    status = _schema(CRDS[kind])["properties"]["status"]
    undocumented += [p for p, n in _walk(status, ".status") if not n.get("description") and not p.endswith("[]")]
    assert undocumented == []


def test_defaults_enums_and_bounds_are_carried_over() -> None:
    spec = _schema(CRDS["FineTuneJob"])["properties"]["spec"]["properties"]
    lora = spec["lora"]["properties"]
    assert spec["lora"]["default"] == {
        "r": 16,
        "alpha": 32,
        "dropout": 0.05,
        "targetModules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "bias": "none",
        "rslora": False,
        "dora": False,
    }
    assert lora["r"] == {**lora["r"], "default": 16, "minimum": 1, "type": "integer"}
    assert lora["dropout"]["exclusiveMaximum"] is True and lora["dropout"]["maximum"] == 1
    assert spec["method"]["enum"] == ["lora", "qlora", "full"] and spec["method"]["default"] == "lora"
    training = spec["training"]["properties"]
    assert training["maxSeqLength"]["minimum"] == 16 and training["maxSeqLength"]["maximum"] == 131072
    assert training["learningRate"]["default"] == 2e-4
    assert spec["resources"]["properties"]["memory"]["x-kubernetes-int-or-string"] is True


@pytest.mark.parametrize(
    ("kind", "short", "columns"),
    [
        ("FineTuneJob", "ftj", ["Phase", "Model", "Method", "Progress", "Eval Loss", "Age"]),
        ("ModelServe", "msv", ["Phase", "Adapters", "Loaded", "Ready", "URL", "Age"]),
    ],
)
def test_names_columns_and_status_subresource(kind: str, short: str, columns: list[str]) -> None:
    crd = CRDS[kind]
    assert crd["spec"]["names"]["shortNames"] == [short]
    assert crd["spec"]["names"]["categories"] == ["kubetune"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [column["name"] for column in version["additionalPrinterColumns"]] == columns


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_every_cel_rule_compiles(kind: str) -> None:
    rules = [r["rule"] for _, node in _walk(_schema(CRDS[kind])) for r in node.get("x-kubernetes-validations", [])]
    assert len(rules) >= 4
    for rule in rules:
        compile_rule(rule)


def _ftj(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "kubetune.dev/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "j"}, "spec": spec}


def test_spec_is_immutable_except_suspend() -> None:
    crd = CRDS["FineTuneJob"]
    old = _ftj(VALID_FTJ_SPEC)
    suspended = _ftj({**VALID_FTJ_SPEC, "suspend": True})
    assert admission_errors(crd, suspended, old) == []
    retrained = _ftj({**VALID_FTJ_SPEC, "training": {"epochs": 5}})
    errors = admission_errors(crd, retrained, old)
    assert errors == [
        "spec: spec.training is immutable after creation (only suspend may change); create a new FineTuneJob instead"
    ]
    added_output = _ftj({**VALID_FTJ_SPEC, "output": {"pvc": {"claimName": "mine"}}})
    assert any("spec.output is immutable" in e for e in admission_errors(crd, added_output, old))
    added_image = _ftj({**VALID_FTJ_SPEC, "image": "registry.example/trainer:2"})
    assert any("spec.image is immutable" in e for e in admission_errors(crd, added_image, old))


def test_every_spec_field_but_suspend_has_an_immutability_rule() -> None:
    rules = _schema(CRDS["FineTuneJob"])["properties"]["spec"]["x-kubernetes-validations"]
    guarded = {rule["fieldPath"].lstrip(".") for rule in rules if "oldSelf" in rule["rule"]}
    fields = set(_schema(CRDS["FineTuneJob"])["properties"]["spec"]["properties"])
    assert guarded == fields - {"suspend"}


EXAMPLES = example_documents()


def test_examples_cover_the_tutorials_three_jobs() -> None:
    kinds = [doc["kind"] for _, doc in EXAMPLES]
    assert kinds.count("FineTuneJob") >= 3 and kinds.count("ModelServe") >= 3


@pytest.mark.parametrize(("where", "document"), EXAMPLES, ids=[where for where, _ in EXAMPLES])
def test_example_parses_and_passes_the_crd(where: str, document: dict[str, Any]) -> None:
    resource = parse_resource(document)
    assert isinstance(resource, FineTuneJob | ModelServe)
    assert admission_errors(CRDS[document["kind"]], document) == []


def test_tutorial_recipes_are_kept_in_examples() -> None:
    docs = {doc["metadata"]["name"] + "/" + doc["kind"]: parse_resource(doc) for _, doc in EXAMPLES}
    chatbot = docs["support-chatbot/FineTuneJob"].spec
    assert (chatbot.method, chatbot.lora.r, chatbot.lora.alpha) == ("qlora", 64, 16)
    assert (chatbot.training.batch_size, chatbot.training.gradient_accumulation_steps) == (1, 16)
    assert (chatbot.training.max_grad_norm, chatbot.training.scheduler) == (0.3, "constant")
    medical = docs["medical-qa/FineTuneJob"].spec
    assert (medical.lora.r, medical.lora.alpha, medical.training.epochs) == (32, 64, 5)
    assert (medical.training.learning_rate, medical.training.max_seq_length) == (1e-4, 1024)
    assert medical.training.weight_decay == 0.01


def test_crd_yaml_on_disk_round_trips() -> None:
    on_disk = yaml.safe_load((REPO / "crds" / "finetunejobs.kubetune.dev.yaml").read_text())
    assert on_disk == CRDS["FineTuneJob"]
