"""Object metadata of children: labels, owner references."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import naming


@dataclass(frozen=True)
class Owner:
    """The custom resource that owns a child (its garbage collection and its events hang on this)."""

    api_version: str
    kind: str
    name: str
    namespace: str
    uid: str

    @classmethod
    def of(cls, body: dict[str, Any]) -> Owner:
        meta = body["metadata"]
        return cls(body["apiVersion"], body["kind"], meta["name"], meta["namespace"], meta["uid"])

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def labels(component: str, instance: str, owner_label: str) -> dict[str, str]:
    """Recommended labels plus the owner label the operator selects children by. No Argo CD tracking labels."""
    value = naming.label_value(instance)
    return {
        naming.LABEL_NAME: "kubetune",
        naming.LABEL_INSTANCE: value,
        naming.LABEL_COMPONENT: component,
        naming.LABEL_MANAGED_BY: naming.MANAGED_BY,
        owner_label: value,
    }


def object_meta(name: str, owner: Owner, child_labels: dict[str, str], owned: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": owner.namespace, "labels": dict(child_labels)}
    if owned:
        meta["ownerReferences"] = [owner.reference()]
    return meta
