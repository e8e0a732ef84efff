"""Check objects against a generated CRD as the API server would: defaults, OpenAPI schema, CEL rules.

kmock does not validate custom resources, so tests use this to prove the CRD rejects what the models
reject. CEL is evaluated with cel-python (standard CEL; enough for the rules kubetune writes).
`default_errors` checks the CRD itself the way the API server does when the CRD is created.
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
        message = rule.get("message", rule["rule"])
        try:
            result = _program(rule["rule"]).evaluate(activation)
        except celpy.CELEvalError as error:  # e.g. a field read without has(): the server's "no such key"
            errors.append(f"{path or '(root)'}: {error.args[0]} evaluating rule: {message}")
            continue
        if isinstance(result, Exception) or not bool(result):
            errors.append(f"{path or '(root)'}: {message}")
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


def _unknown_fields(schema: dict[str, Any], value: Any, path: str) -> list[str]:
    """Fields the API server would prune from `value` (a default must not have any)."""
    found = []
    if isinstance(value, dict) and not schema.get("x-kubernetes-preserve-unknown-fields"):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for name, sub in value.items():
            where = f"{path}.{name}"
            if name in properties:
                found += _unknown_fields(properties[name], sub, where)
            elif isinstance(extra, dict):
                found += _unknown_fields(extra, sub, where)
            else:
                found.append(f"{where}: unknown field")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            found += _unknown_fields(schema["items"], item, f"{path}[{index}]")
    return found


def _defaulted_nodes(schema: dict[str, Any], path: str = ""):
    """(path, node) for every node with a `default`, walked like the server: properties and items only
    (defaults are forbidden under additionalProperties, so it does not look there)."""
    if "default" in schema:
        yield path or "(root)", schema
    for name, sub in schema.get("properties", {}).items():
        yield from _defaulted_nodes(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _defaulted_nodes(schema["items"], f"{path}[]")


def default_errors(schema: dict[str, Any]) -> list[str]:
    """Why the API server would refuse this schema's `default`s when the CRD is created; empty if it would not.

    As apiextensions-apiserver's defaulting.ValidateDefaults does, each default is taken AS WRITTEN (the nested
    defaults of its fields are NOT applied first, so `default: {}` really is an empty object) and must: have no
    field pruning would drop, validate against its node's OpenAPI schema, and pass every CEL rule of its node and
    of the nested nodes whose fields it contains. CEL runs twice, as on the server: once as an update from the
    default to itself (transition rules see `oldSelf` == the default) and once as a create (no old value, so
    transition rules are skipped, the CRDValidationRatcheting pass, on by default since 1.30).
    """
    errors = []
    for path, node in _defaulted_nodes(schema):
        default = node["default"]
        where = f"{path}.default"
        errors += _unknown_fields(node, default, where)
        errors += [f"{where}{'.' if line[0] != ':' else ''}{line}" for line in schema_errors(node, default)]
        errors += cel_errors(node, default, old=default, path=where)
        errors += cel_errors(node, default, old=None, path=where)
    return list(dict.fromkeys(errors))  # the two CEL passes mostly report the same failures
