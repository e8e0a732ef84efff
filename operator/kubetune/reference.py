"""Render docs/reference.md, the field-by-field CR reference, from the generated CRD schemas.

It reads the same schema `kubectl explain` serves, so the docs cannot say something the cluster does not.
"""

from __future__ import annotations

from typing import Any

from .api.crd import finetunejob_crd, finetuneruntime_crd, modelserve_crd

INTRO = """# kubetune custom resource reference

Generated from the API models (`operator/kubetune/api/`) by `make generate`; do not edit by hand.
Every field here is also available as `kubectl explain finetunejob.spec.<field>` once the CRDs are installed.
Defaults are applied by the API server, so omitted fields take the values below.
"""


def _type(node: dict[str, Any]) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "quantity (string or integer)"
    kind = node.get("type", "object")
    if kind == "array":
        return f"list of {_type(node.get('items', {}))}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"map of {_type(node['additionalProperties'])}"
    return kind


def _constraints(node: dict[str, Any]) -> str:
    parts = []
    if "enum" in node:
        parts.append("one of " + ", ".join(f"`{value}`" for value in node["enum"]))
    for key, symbol in (("minimum", ">"), ("maximum", "<")):
        if key in node:
            exclusive = node.get("exclusiveMinimum" if key == "minimum" else "exclusiveMaximum") is True
            parts.append(f"{symbol}{'' if exclusive else '='} {node[key]}")
    if "maxLength" in node:
        parts.append(f"at most {node['maxLength']} characters")
    if "maxItems" in node:
        parts.append(f"at most {node['maxItems']} items")
    if "pattern" in node:
        parts.append(f"matches `{node['pattern']}`")
    return "; ".join(parts)


def _default(node: dict[str, Any]) -> str:
    """An object's default is its children's defaults, which have rows of their own: leave its cell empty."""
    if "default" not in node or isinstance(node["default"], dict):
        return ""
    value = node["default"]
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value == "":
        return '`""`'
    return f"`{value}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _rows(node: dict[str, Any], prefix: str, required: set[str]) -> list[str]:
    rows = []
    for name, sub in node.get("properties", {}).items():
        path = f"{prefix}.{name}" if prefix else name
        needed = " (required)" if name in required else ""
        rows.append(
            f"| `{path}`{needed} | {_type(sub)} | {_default(sub)} | {_cell(sub.get('description', ''))} "
            f"| {_cell(_constraints(sub))} |"
        )
        child = sub.get("items", sub) if sub.get("type") == "array" else sub
        if child.get("properties"):
            rows += _rows(child, f"{path}[]" if sub.get("type") == "array" else path, set(child.get("required", [])))
    return rows


def _rules(node: dict[str, Any]) -> list[str]:
    found = [rule["message"] for rule in node.get("x-kubernetes-validations", []) if "oldSelf" not in rule["rule"]]
    for sub in node.get("properties", {}).values():
        found += _rules(sub.get("items", sub) if sub.get("type") == "array" else sub)
    return found


def _section(crd: dict[str, Any]) -> str:
    kind = crd["spec"]["names"]["kind"]
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    header = "| Field | Type | Default | Description | Allowed |\n|---|---|---|---|---|"
    parts = [f"## {kind}", "", _cell(schema.get("description", "")), ""]
    for part in [name for name in ("spec", "status") if name in schema["properties"]]:
        node = schema["properties"][part]
        parts += [f"### {kind}.{part}", "", _cell(node.get("description", "")), "", header]
        parts += _rules_free_rows(node, part)
        if part == "spec":
            rules = _rules(node)
            if rules:
                parts += ["", "Cross-field rules (enforced by the API server and the operator):", ""]
                parts += [f"- {rule}" for rule in dict.fromkeys(rules)]
        parts.append("")
    return "\n".join(parts)


def _rules_free_rows(node: dict[str, Any], prefix: str) -> list[str]:
    return _rows(node, prefix, set(node.get("required", [])))


def render_reference() -> str:
    sections = [_section(finetunejob_crd()), _section(modelserve_crd()), _section(finetuneruntime_crd())]
    return INTRO + "\n" + "\n".join(sections)
