"""The CRDs' `default`s pass the checks the API server runs when the CRD is created.

kube-apiserver validates every `default`, as written, against its node's schema and CEL rules, and refuses the
whole CRD if one fails (a 1.36 server refused ModelServe's `generation: {default: {}}` because its rule reads
`self.maxNewTokens`). The admission tests never see this: they check objects after defaulting.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubetune.api import FineTuneJobSpec, ModelServeSpec
from kubetune.api.crd import finetunejob_crd, modelserve_crd

from tests.support.crd_schema import apply_defaults, cel_errors, default_errors

CRDS = {"FineTuneJob": finetunejob_crd(), "ModelServe": modelserve_crd()}
SPECS = {"FineTuneJob": FineTuneJobSpec, "ModelServe": ModelServeSpec}


def _schema(crd: dict[str, Any]) -> dict[str, Any]:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _object_defaults(schema: dict[str, Any], path: str = ""):
    """(path, node) for every object node with a default."""
    if schema.get("type") == "object" and "default" in schema:
        yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _object_defaults(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _object_defaults(schema["items"], f"{path}[]")


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_every_default_is_accepted_at_crd_creation(kind: str) -> None:
    assert default_errors(_schema(CRDS[kind])) == []


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_object_defaults_are_complete(kind: str) -> None:
    """A defaulted object carries its fields' defaults (for kubectl explain, and so its own rules can read them)."""
    found = list(_object_defaults(_schema(CRDS[kind])))
    assert found, "expected nested object defaults"
    for path, node in found:
        assert node["default"], f"{path}: an empty default"
        assert apply_defaults(node, copy.deepcopy(node["default"])) == node["default"], f"{path} is not complete"


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_object_defaults_are_what_the_models_fill_in(kind: str) -> None:
    """The API server and the operator's models agree on what an omitted object becomes."""
    spec = _schema(CRDS[kind])["properties"]["spec"]
    model = SPECS[kind]
    for name, node in spec["properties"].items():
        if node.get("type") == "object" and "default" in node:
            field = next(f for f, info in model.model_fields.items() if (info.alias or f) == name)
            value = model.model_fields[field].get_default(call_default_factory=True)
            assert node["default"] == value.to_wire(), name


def test_modelserve_generation_default_satisfies_its_rule() -> None:
    generation = _schema(CRDS["ModelServe"])["properties"]["spec"]["properties"]["generation"]
    assert generation["default"]["maxNewTokens"] == 256
    assert generation["default"]["maxNewTokensLimit"] == 2048


# The checker itself, on small schemas (each shaped like a case the real server refuses or accepts).

_LIMITS_RULE = {"rule": "self.low <= self.high", "message": "low must not exceed high"}


def _parent(child: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {"child": child}}


def _limits(default: Any, rules: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "low": {"type": "integer", "default": 1, "maximum": 10},
            "high": {"type": "integer", "default": 2},
        },
        "x-kubernetes-validations": rules if rules is not None else [_LIMITS_RULE],
        "default": default,
    }


def test_checker_refuses_an_empty_default_whose_rule_reads_fields() -> None:
    """The failure seen on kube-apiserver 1.36: nested defaults are not applied to a default before CEL runs."""
    errors = default_errors(_parent(_limits({})))
    assert len(errors) == 1
    assert errors[0].startswith(".child.default: ")
    assert "'low'" in errors[0] and errors[0].endswith("evaluating rule: low must not exceed high")


def test_checker_accepts_a_complete_default_and_guarded_rules() -> None:
    assert default_errors(_parent(_limits({"low": 1, "high": 2}))) == []
    guarded = {"rule": "!has(self.low) || !has(self.high) || self.low <= self.high", "message": "guarded"}
    assert default_errors(_parent(_limits({}, [guarded]))) == []


def test_checker_refuses_a_default_that_breaks_its_rule() -> None:
    assert default_errors(_parent(_limits({"low": 3, "high": 2}))) == [".child.default: low must not exceed high"]


def test_checker_validates_the_default_against_the_schema() -> None:
    errors = default_errors(_parent(_limits({"low": 11, "high": 20})))
    assert errors == [".child.default.low: 11 is greater than the maximum of 10"]
    assert default_errors({"type": "integer", "default": "x"}) == ["(root).default: 'x' is not of type 'integer'"]


def test_checker_refuses_unknown_fields_in_a_default() -> None:
    errors = default_errors(_parent(_limits({"low": 1, "high": 2, "middle": 3})))
    assert errors == [".child.default.middle: unknown field"]


def test_checker_runs_the_rules_of_nested_nodes_present_in_the_default() -> None:
    outer = {"type": "object", "properties": {"limits": _limits(None)}, "default": {"limits": {}}}
    del outer["properties"]["limits"]["default"]
    errors = default_errors(_parent(outer))
    assert errors and all(e.startswith(".child.default.limits: ") for e in errors)
    outer["default"] = {}  # the nested node is absent from the default: its rule does not run
    assert default_errors(_parent(outer)) == []


def test_checker_looks_inside_array_items() -> None:
    listed = {"type": "array", "items": _limits({})}
    assert default_errors(_parent(listed))[0].startswith(".child[].default: ")


def test_transition_rules_on_defaults_see_the_default_as_old_self() -> None:
    """A rule with oldSelf only runs where there is an old value. For a default the server checks an update from
    the default to itself (oldSelf IS the default) and, with CRDValidationRatcheting, a create (no old value: the
    rule is skipped). So an immutability rule holds, but one that reads a field the default lacks is refused too.
    Each case here was checked against kube-apiserver 1.36.2 (/work/shared/envtest), which agreed."""
    immutable = {"rule": "self == oldSelf", "message": "immutable"}
    assert default_errors(_parent(_limits({"low": 1, "high": 2}, [immutable]))) == []
    must_change = {"rule": "self.low != oldSelf.low", "message": "must change"}
    assert default_errors(_parent(_limits({"low": 1, "high": 2}, [must_change]))) == [".child.default: must change"]
    reads_missing = {"rule": "self.high == oldSelf.high", "message": "high is immutable"}
    errors = default_errors(_parent(_limits({"low": 1}, [reads_missing])))
    assert len(errors) == 1 and "'high'" in errors[0] and errors[0].endswith("evaluating rule: high is immutable")
    guarded = {"rule": "!has(oldSelf.low) || self.low == oldSelf.low", "message": "guarded transition"}
    assert default_errors(_parent(_limits({"low": 1}, [guarded]))) == []


def test_transition_rules_are_skipped_without_an_old_value() -> None:
    """The create pass alone (cel_errors without `old`) never runs a transition rule, even one that cannot hold."""
    never = {"rule": "self.low != oldSelf.low && false", "message": "never holds"}
    node = _limits({"low": 1, "high": 2}, [never])
    assert cel_errors(node, node["default"]) == []
    assert cel_errors(node, node["default"], old=node["default"]) == ["(root): never holds"]
