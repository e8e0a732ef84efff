"""Reject what a real API server would: built-in manifests via kubernetes-validate, CR status via the CRD schema."""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

import jsonschema
import kubernetes_validate

from .state import ApiError, Kind

KUBERNETES_VERSION = "1.30"
# Fields the server itself adds; their presence is valid, but the bundled schemas know them anyway.


def _crd_status_schema(crd: dict[str, Any]) -> dict[str, Any] | None:
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    return version["schema"]["openAPIV3Schema"].get("properties", {}).get("status")


def _strip_kubernetes_extensions(schema: Any) -> Any:
    """jsonschema knows nothing of `x-kubernetes-int-or-string`: widen such nodes to integer-or-string."""
    if isinstance(schema, dict):
        result = {key: _strip_kubernetes_extensions(value) for key, value in schema.items()}
        if schema.get("x-kubernetes-int-or-string"):
            result.pop("type", None)
            result["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        return result
    if isinstance(schema, list):
        return [_strip_kubernetes_extensions(item) for item in schema]
    return schema


class ManifestValidator:
    """Validates objects written by the operator; keeps every failure so the test can fail on it."""

    def __init__(self, crds: list[dict[str, Any]], version: str = KUBERNETES_VERSION) -> None:
        self.version = version
        self.errors: list[str] = []
        self._valid: set[str] = set()
        self._lock = threading.Lock()
        self._status_schemas = {
            (crd["spec"]["group"], crd["spec"]["names"]["plural"]): _strip_kubernetes_extensions(
                _crd_status_schema(crd)
            )
            for crd in crds
        }

    def __call__(self, kind: Kind, obj: dict[str, Any], subresource: str | None) -> None:
        problem = self.problem(kind, obj, subresource)
        if problem is not None:
            with self._lock:
                self.errors.append(problem)
            raise ApiError(422, "Invalid", problem)

    def problem(self, kind: Kind, obj: dict[str, Any], subresource: str | None) -> str | None:
        """A description of what is invalid, or None."""
        name = f"{kind.kind} {obj.get('metadata', {}).get('namespace')}/{obj.get('metadata', {}).get('name')}"
        if kind.key in self._status_schemas:
            schema = self._status_schemas[kind.key]
            if schema is None or "status" not in obj:
                return None
            try:
                jsonschema.validate(obj["status"], schema)
            except jsonschema.ValidationError as exc:
                path = ".".join(str(part) for part in exc.absolute_path)
                return f"{name}: status.{path}: {exc.message}"
            return None
        digest = hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()
        if digest in self._valid:
            return None
        try:
            kubernetes_validate.validate(obj, self.version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(part) for part in exc.path)
            return f"{name}: {path}: {exc.message}"
        except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError):
            return None
        self._valid.add(digest)
        return None
