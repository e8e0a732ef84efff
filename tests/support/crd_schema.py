"""Check objects against a generated CRD as the API server would: defaults, OpenAPI schema, CEL rules.

kmock does not validate custom resources, so tests use this to prove the CRD rejects what the models
reject. CEL is evaluated with cel-python (standard CEL; enough for the rules kubetune writes).
"""

from __future__ import annotations

import copy
from typing import Any

import celpy
import jsonschema


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Fill `default`s the way the API server does: for absent properties of present objects, recursively."""
    if isinstance(value, dict) and schema.get("type") == "object":
        for name, sub in schema.get("properties", {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = apply_defaults(sub, value[name])
    elif isinstance(value, list) and "items" in schema:
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def schema_errors(schema: dict[str, Any], value: Any) -> list[str]:
    """OpenAPI v3.0 (draft-4 style bounds) violations, as `path: message` lines."""
    validator = jsonschema.Draft4Validator(schema)
    return [
        f"{'.'.join(str(p) for p in error.absolute_path)}: {error.message}" for error in validator.iter_errors(value)
    ]


_ENV = celpy.Environment()
_PROGRAMS: dict[str, Any] = {}


def _program(rule: str) -> Any:
    if rule not in _PROGRAMS:
        _PROGRAMS[rule] = _ENV.program(_ENV.compile(rule))
    return _PROGRAMS[rule]


def compile_rule(rule: str) -> None:
    """Raise if a CEL rule does not compile."""
    _program(rule)


def cel_errors(schema: dict[str, Any], value: Any, old: Any = None, path: str = "") -> list[str]:
    """Evaluate every x-kubernetes-validations rule at its node; transition rules need `old`."""
    errors = []
    for rule in schema.get("x-kubernetes-validations", []):
        uses_old = "oldSelf" in rule["rule"]
        if uses_old and old is None:
            continue
        activation = {"self": celpy.json_to_cel(value)}
        if uses_old:
            activation["oldSelf"] = celpy.json_to_cel(old)
        result = _program(rule["rule"]).evaluate(activation)
        if isinstance(result, Exception) or not bool(result):
            errors.append(f"{path or '(root)'}: {rule.get('message', rule['rule'])}")
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                old_sub = old.get(name) if isinstance(old, dict) else None
                errors += cel_errors(sub, value[name], old_sub, f"{path}.{name}" if path else name)
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            errors += cel_errors(schema["items"], item, None, f"{path}[{index}]")
    return errors


def admission_report(crd: dict[str, Any], obj: dict[str, Any], old: dict[str, Any] | None = None) -> dict[str, list]:
    """Schema and CEL errors for a whole object after defaulting, by layer."""
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    obj = apply_defaults(schema, copy.deepcopy(obj))
    if old is not None:
        old = apply_defaults(schema, copy.deepcopy(old))
    return {"schema": schema_errors(schema, obj), "cel": cel_errors(schema, obj, old)}


def admission_errors(crd: dict[str, Any], obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """All errors (empty means the API server would accept the object)."""
    report = admission_report(crd, obj, old)
    return report["schema"] + report["cel"]
