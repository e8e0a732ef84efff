"""Generate the CustomResourceDefinitions from the API models, so the cluster and the code agree.

The output is a plain dict per CRD (YAML writing lives in the CLI). Pydantic's JSON schema is made
structural for Kubernetes: references inlined, nullable unions collapsed, int-or-string marked,
exclusive bounds rewritten in OpenAPI v3.0 form, titles and `additionalProperties: false` dropped.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from .base import API_GROUP, API_VERSION
from .finetunejob import FineTuneJobSpec, FineTuneJobStatus
from .modelserve import ModelServeSpec, ModelServeStatus
from .resources import FineTuneJob, ModelServe
from .runtime_policy import FineTuneRuntime, FineTuneRuntimeSpec

CATEGORY = "kubetune"
MUTABLE_FINETUNEJOB_FIELDS = frozenset({"suspend"})

_NULL = {"type": "null"}
_LEADING_KEYS = ("type", "description", "required", "properties", "items")


def _resolve_refs(node: Any, defs: dict[str, Any]) -> Any:
    """Inline every `$ref`; keys beside a `$ref` (a field's own description, default) win."""
    if isinstance(node, list):
        return [_resolve_refs(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        siblings = {key: value for key, value in node.items() if key != "$ref"}
        return _resolve_refs({**target, **siblings}, defs)
    return {key: _resolve_refs(value, defs) for key, value in node.items()}


def _collapse_union(node: dict[str, Any]) -> dict[str, Any]:
    options = node.pop("anyOf")
    non_null = [option for option in options if option != _NULL]
    if {o.get("type") for o in non_null} == {"integer", "string"}:
        node["x-kubernetes-int-or-string"] = True
        return node
    if len(non_null) != 1:
        raise ValueError(f"cannot express a union of {non_null} in a structural schema")
    only = non_null[0]
    # The field's own keys (description, default) win over the referenced model's.
    return {**only, **node}


def _structural(node: Any) -> Any:
    """Rewrite one JSON-schema node (recursively) into the Kubernetes structural dialect."""
    if isinstance(node, list):
        return [_structural(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "allOf" in node and len(node["allOf"]) == 1:
        node = {**node.pop("allOf")[0], **node}
    while "anyOf" in node:
        node = _collapse_union(node)
    node.pop("title", None)
    if node.get("additionalProperties") is False:
        node.pop("additionalProperties")
    if "default" in node and node["default"] is None:
        node.pop("default")
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for exclusive, inclusive in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(exclusive), (int, float)) and not isinstance(node.get(exclusive), bool):
            node[inclusive] = node[exclusive]
            node[exclusive] = True
    if node.get("x-kubernetes-int-or-string"):
        node.pop("type", None)
    if isinstance(node.get("description"), str):
        node["description"] = " ".join(node["description"].split())  # docstrings wrap; kubectl explain re-wraps
    if "enum" in node and "type" not in node:
        node["type"] = _json_type(node["enum"][0])
    ordered = {key: node[key] for key in _LEADING_KEYS if key in node}
    ordered.update((key, node[key]) for key in sorted(node) if key not in ordered)
    result = {}
    for key, value in ordered.items():
        if key == "properties":
            result[key] = {name: _structural(sub) for name, sub in value.items()}
        elif key == "default":
            result[key] = value
        else:
            result[key] = _structural(value)
    return result


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of one pydantic model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _structural(_resolve_refs(raw, defs))


def _optional_equal(field: str) -> str:
    return f"has(self.{field}) ? (has(oldSelf.{field}) && self.{field} == oldSelf.{field}) : !has(oldSelf.{field})"


def immutability_rules(spec_model: type[BaseModel], mutable: frozenset[str]) -> list[dict[str, str]]:
    """One transition rule per spec field: unchanged after creation unless listed as mutable."""
    rules = []
    for name, info in spec_model.model_fields.items():
        wire = info.alias or name
        if wire in mutable:
            continue
        rule = f"self.{wire} == oldSelf.{wire}" if info.is_required() else _optional_equal(wire)
        rules.append(
            {
                "rule": rule,
                "message": f"spec.{wire} is immutable after creation (only {', '.join(sorted(mutable))} may change); "
                "create a new FineTuneJob instead",
                "reason": "FieldValueForbidden",
                "fieldPath": f".{wire}",
            }
        )
    return rules


def _object_schema(resource: type[BaseModel], spec: dict[str, Any], status: dict[str, Any] | None) -> dict[str, Any]:
    if status is None:  # a kind without status (FineTuneRuntime)
        schema = _object_schema(resource, spec, {})
        del schema["properties"]["status"]
        return schema
    return {
        "type": "object",
        "description": (resource.__doc__ or "").strip(),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "API version: kubetune.dev/v1alpha1."},
            "kind": {"type": "string", "description": f"Kind: {resource.__name__}."},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }


def _crd(
    resource: type[BaseModel],
    plural: str,
    short_name: str,
    schema: dict[str, Any],
    columns: list[dict[str, Any]],
    scope: str = "Namespaced",
) -> dict[str, Any]:
    kind = resource.__name__
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{API_GROUP}",
            "labels": {"app.kubernetes.io/name": "kubetune", "app.kubernetes.io/part-of": "kubetune"},
        },
        "spec": {
            "group": API_GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short_name],
                "categories": [CATEGORY],
            },
            "scope": scope,
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }
    if "status" not in schema["properties"]:
        del crd["spec"]["versions"][0]["subresources"]
    return crd


_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def finetunejob_crd() -> dict[str, Any]:
    spec = model_schema(FineTuneJobSpec)
    spec.setdefault("x-kubernetes-validations", []).extend(
        immutability_rules(FineTuneJobSpec, MUTABLE_FINETUNEJOB_FIELDS)
    )
    columns = [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Model", "type": "string", "jsonPath": ".spec.baseModel.name"},
        {"name": "Method", "type": "string", "jsonPath": ".spec.method"},
        {
            "name": "Progress",
            "type": "integer",
            "jsonPath": ".status.progress.percent",
            "description": "Training progress in percent.",
        },
        {
            "name": "Eval Loss",
            "type": "number",
            # progress, not metrics: the trainer reports each evaluation while it trains, and the final one with it.
            "jsonPath": ".status.progress.evalLoss",
            "description": "Most recent evaluation loss (each evaluation during training, then the final one).",
        },
        _AGE,
    ]
    schema = _object_schema(FineTuneJob, spec, model_schema(FineTuneJobStatus))
    return _crd(FineTuneJob, FineTuneJob.PLURAL, "ftj", schema, columns)


def modelserve_crd() -> dict[str, Any]:
    columns = [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Adapters", "type": "string", "jsonPath": ".status.adapterNames"},
        {
            "name": "Loaded",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="AdaptersLoaded")].status',
            "description": "Every adapter loaded on every ready server replica, as the servers report (True).",
        },
        {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
        {"name": "URL", "type": "string", "jsonPath": ".status.url"},
        _AGE,
    ]
    schema = _object_schema(ModelServe, model_schema(ModelServeSpec), model_schema(ModelServeStatus))
    return _crd(ModelServe, ModelServe.PLURAL, "msv", schema, columns)


def finetuneruntime_crd() -> dict[str, Any]:
    columns = [
        {"name": "Trainer Image", "type": "string", "jsonPath": ".spec.trainerImage"},
        {"name": "Max GPUs", "type": "integer", "jsonPath": ".spec.maxGpus"},
        {"name": "Queue", "type": "string", "jsonPath": ".spec.defaultQueueName"},
        _AGE,
    ]
    schema = _object_schema(FineTuneRuntime, model_schema(FineTuneRuntimeSpec), None)
    return _crd(FineTuneRuntime, FineTuneRuntime.PLURAL, "ftr", schema, columns, scope="Cluster")


def all_crds() -> dict[str, dict[str, Any]]:
    """File name -> CRD, for every kind."""
    crds = [finetunejob_crd(), modelserve_crd(), finetuneruntime_crd()]
    return {f"{crd['metadata']['name']}.yaml": crd for crd in crds}
