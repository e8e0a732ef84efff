"""Admin-owned runtimes (FineTuneRuntime): which one applies to an object, what it refuses, and the spec the
operator renders the children from (the stored object is never changed).

A violation is checked only before the first child is created (a running trainer or server is never stopped
because an admin tightened its runtime later); the runtime's images, placement, queue and storage class are
applied on every render, so a re-created child matches the first one.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TypeVar

from kubetune.api.finetunejob import FineTuneJobSpec, ResourceSpec
from kubetune.api.modelserve import ModelServeSpec, ServeResourceSpec
from kubetune.api.runtime_policy import FineTuneRuntimeSpec
from kubetune.api.sources import ModelSource, Toleration

from .settings import OperatorSettings

POLICY_VIOLATION = "PolicyViolation"
RUNTIME_NOT_FOUND = "RuntimeNotFound"
RUNTIME_CONFLICT = "RuntimeConflict"
# A FineTuneJob's or a ModelServe's resources: both carry node_selector, tolerations and gpu_resource_name.
ResourcesT = TypeVar("ResourcesT", ResourceSpec, ServeResourceSpec)


class RuntimeConflict(ValueError):
    """Several FineTuneRuntimes list the object's namespace in defaultForNamespaces: none is picked."""


def namespace_claims(runtimes: dict[str, list[str]]) -> dict[str, list[str]]:
    """namespace -> the runtimes that are its default, from runtime name -> its defaultForNamespaces."""
    claims: dict[str, list[str]] = {}
    for name, namespaces in runtimes.items():
        for namespace in dict.fromkeys(namespaces):
            claims.setdefault(namespace, []).append(name)
    return claims


def runtime_name(
    spec_name: str | None, namespace: str, claimants: Collection[str], settings: OperatorSettings
) -> str | None:
    """The runtime that applies to an object: the one its spec.runtimeName names, else the one whose
    defaultForNamespaces lists its namespace (`claimants`: every such runtime), else the operator's default
    (None: no runtime applies). Raises RuntimeConflict when several runtimes claim the namespace."""
    if spec_name:
        return spec_name
    names = sorted(set(claimants))
    if len(names) > 1:
        raise RuntimeConflict(
            f"namespace {namespace} is the default of several FineTuneRuntimes ({', '.join(names)}: each lists it "
            "in spec.defaultForNamespaces); name one in spec.runtimeName, or ask the platform admins to keep the "
            "namespace in only one runtime"
        )
    if names:
        return names[0]
    return settings.default_runtime or None


def model_label(source: ModelSource) -> str:
    """What allowedBaseModels patterns match: the Hub id (without revision), or 'pvc:<claim>/<path>'."""
    if source.name is not None:
        return source.name
    assert source.pvc is not None
    return f"pvc:{source.pvc.claim_name}/{source.pvc.path}".rstrip("/")


def _common(
    name: str, runtime: FineTuneRuntimeSpec, image: str | None, gpus: int, model: ModelSource | None
) -> list[str]:
    where = f"FineTuneRuntime {name}"
    problems = []
    if image and not runtime.allow_image_override:
        problems.append(
            f"spec.image is not allowed by {where} (allowImageOverride is false): remove it to use the runtime's image"
        )
    if runtime.max_gpus is not None and gpus > runtime.max_gpus:
        problems.append(f"spec.resources.gpus {gpus} exceeds maxGpus {runtime.max_gpus} of {where}")
    if model is not None and not runtime.allows_model(model_label(model)):
        allowed = ", ".join(runtime.allowed_base_models)
        problems.append(f"spec.baseModel {model_label(model)!r} is not allowed by {where} (allowed: {allowed})")
    return problems


def finetunejob_violations(spec: FineTuneJobSpec, name: str, runtime: FineTuneRuntimeSpec) -> list[str]:
    """Every way `spec` breaks the runtime's policy, each naming the field, the limit and the runtime."""
    problems = _common(name, runtime, spec.image, spec.resources.gpus, spec.base_model)
    augmentation = spec.dataset.augmentation
    for model in augmentation.models(spec.base_model) if augmentation is not None else []:
        if not model.is_base_model and not runtime.allows_model(model_label(model.source)):
            allowed = ", ".join(runtime.allowed_base_models)
            problems.append(
                f"{model.path} {model_label(model.source)!r} is not allowed by FineTuneRuntime {name} "
                f"(allowedBaseModels: {allowed})"
            )
    if runtime.max_nodes is not None and spec.resources.nodes > runtime.max_nodes:
        nodes, limit = spec.resources.nodes, runtime.max_nodes
        problems.append(f"spec.resources.nodes {nodes} exceeds maxNodes {limit} of FineTuneRuntime {name}")
    return problems


def modelserve_violations(spec: ModelServeSpec, name: str, runtime: FineTuneRuntimeSpec) -> list[str]:
    problems = _common(name, runtime, spec.image, spec.resources.gpus, spec.base_model)
    if spec.service.type == "LoadBalancer" and not runtime.allow_load_balancer:
        problems.append(
            f"spec.service.type LoadBalancer is not allowed by FineTuneRuntime {name} (allowLoadBalancer is false): "
            "use ClusterIP behind your ingress"
        )
    return problems


def _tolerations(user: list[Toleration], admin: list[Toleration]) -> list[Toleration]:
    return [*user, *(item for item in admin if item not in user)]


def _on_runtime_pool(res: ResourcesT, runtime: FineTuneRuntimeSpec) -> ResourcesT:
    """The resources with the runtime's GPU pool: its node selector and tolerations added, its GPU resource name."""
    return res.model_copy(
        update={
            "node_selector": {**res.node_selector, **runtime.node_selector},
            "tolerations": _tolerations(res.tolerations, runtime.tolerations),
            "gpu_resource_name": runtime.gpu_resource_name or res.gpu_resource_name,
        }
    )


def effective_finetunejob(spec: FineTuneJobSpec, runtime: FineTuneRuntimeSpec) -> FineTuneJobSpec:
    """The spec the trainer's children are rendered from: the runtime's image, GPU pool, queue and storage class."""
    resources = _on_runtime_pool(spec.resources, runtime)
    output = spec.output
    if output.pvc is None and output.storage_class_name is None and runtime.storage_class_name:
        output = output.model_copy(update={"storage_class_name": runtime.storage_class_name})
    image = spec.image if runtime.allow_image_override and spec.image else runtime.trainer_image or spec.image
    return spec.model_copy(
        update={
            "resources": resources,
            "output": output,
            "image": image,
            "queue_name": spec.queue_name or runtime.default_queue_name,
        }
    )


def effective_modelserve(spec: ModelServeSpec, runtime: FineTuneRuntimeSpec) -> ModelServeSpec:
    """The spec the server's children are rendered from: the runtime's image and GPU pool."""
    resources = _on_runtime_pool(spec.resources, runtime)
    image = spec.image if runtime.allow_image_override and spec.image else runtime.server_image or spec.image
    return spec.model_copy(update={"resources": resources, "image": image})
