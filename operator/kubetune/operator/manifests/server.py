"""Children of a ModelServe: the serve.json ConfigMap, the server Deployment and its Service."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kubetune.api import runtime
from kubetune.api.modelserve import ModelServeSpec
from kubetune.api.serving import ServeConfig

from .. import naming
from ..settings import OperatorSettings
from . import pod, server_engine, storage
from .meta import Owner, labels, object_meta

SERVER_MODULE = "kubetune_server"
PORT_NAME = "http"


def server_labels(owner: Owner) -> dict[str, str]:
    return labels("server", owner.name, naming.LABEL_MODELSERVE)


def selector_labels(owner: Owner) -> dict[str, str]:
    """The stable subset used as Deployment and Service selector (a Deployment's selector is immutable)."""
    full = server_labels(owner)
    return {key: full[key] for key in (naming.LABEL_INSTANCE, naming.LABEL_COMPONENT, naming.LABEL_MODELSERVE)}


def serve_configmap(owner: Owner, config: ServeConfig) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(naming.server_configmap(owner.name), owner, server_labels(owner)),
        "data": {runtime.SERVE_CONFIG_FILE: json.dumps(config.to_wire(), indent=2, sort_keys=True)},
    }


def restart_hash(config: ServeConfig) -> str:
    """Hash of what the server reads only at start: everything but the adapter list, which it hot-reloads."""
    static = config.to_wire()
    static.pop("adapters", None)
    return hashlib.sha256(json.dumps(static, sort_keys=True).encode()).hexdigest()[:16]


def server_model_storage(spec: ModelServeSpec, config: ServeConfig, settings: OperatorSettings) -> storage.ModelStorage:
    """Where a replica downloads a Hub base model: the shared model cache, or its scratch volume."""
    return storage.model_storage(spec.model_cache, config.base_model.name is not None, settings)


def mounted_claims(config: ServeConfig, models: storage.ModelStorage) -> dict[str, bool]:
    """Every claim a replica mounts -> whether read-only (adapters and a base model on a volume are; the model
    cache is not: any replica may be the first to download into it)."""
    claims = {adapter.pvc.claim_name: True for adapter in config.adapters}
    if config.base_model.pvc is not None:
        claims[config.base_model.pvc.claim_name] = True
    if models.cache_claim is not None:
        claims[models.cache_claim] = False
    return claims


def server_volumes(
    owner: Owner, config: ServeConfig, models: storage.ModelStorage | None = None, shm_size: str = "1Gi"
) -> pod.Volumes:
    """serve.json, every adapter and base-model claim read-only, the model cache or a scratch volume, /dev/shm."""
    volumes = pod.Volumes()
    volumes.add(
        pod.configmap_volume("config", naming.server_configmap(owner.name), [runtime.SERVE_CONFIG_FILE]),
        pod.mount("config", runtime.SPEC_DIR, read_only=True),
    )
    claims = sorted({adapter.pvc.claim_name for adapter in config.adapters})
    if config.base_model.pvc is not None and config.base_model.pvc.claim_name not in claims:
        claims.append(config.base_model.pvc.claim_name)
    for claim in claims:
        path = runtime.claim_mount_path(claim, runtime.PVC_ROOT)
        volumes.add_claim(naming.volume_name("pvc", claim), claim, path, True)
    storage.add_model_storage(volumes, models or storage.ModelStorage(None, storage.SMALL_SCRATCH))
    volumes.add(*pod.shm_volume(shm_size))
    return volumes


def server_env(spec: ModelServeSpec, config: ServeConfig, models: storage.ModelStorage) -> list[dict[str, Any]]:
    env = [
        pod.env_value(runtime.ENV_SERVE_CONFIG, f"{runtime.SPEC_DIR}/{runtime.SERVE_CONFIG_FILE}"),
        pod.env_value(runtime.ENV_PORT, str(runtime.SERVER_PORT)),
        *storage.model_storage_env(models),
    ]
    if spec.api_key_secret_ref is not None:
        env.append(pod.env_secret(runtime.ENV_API_KEY, spec.api_key_secret_ref))
    if config.base_model.token_secret_ref is not None:
        env.append(pod.env_secret(runtime.ENV_HF_TOKEN, config.base_model.token_secret_ref))
    return env


def probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": PORT_NAME},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 5,
    }


def server_deployment(
    owner: Owner, spec: ModelServeSpec, config: ServeConfig, settings: OperatorSettings
) -> dict[str, Any]:
    models = server_model_storage(spec, config, settings)
    volumes = server_volumes(owner, config, models, server_engine.shm_size(spec))
    res = spec.resources
    container = {
        "name": naming.SERVER_CONTAINER,
        "image": server_engine.server_image(spec, settings),
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["python", "-m", SERVER_MODULE],
        "env": server_env(spec, config, models) + server_engine.engine_env(spec, settings),
        "ports": [{"name": PORT_NAME, "containerPort": runtime.SERVER_PORT, "protocol": "TCP"}],
        "startupProbe": server_engine.startup_probe(spec, probe),
        "livenessProbe": probe("/health", 10, 3),
        "readinessProbe": probe("/ready", 5, 3),
        "resources": storage.with_scratch_request(
            pod.resources(
                res.cpu, res.memory, res.gpus, res.gpu_resource_name, settings.server_cpu, settings.server_memory
            ),
            models,
        ),
        "securityContext": pod.container_security_context(),
        "volumeMounts": volumes.mounts,
        "lifecycle": server_engine.lifecycle(),
    }
    pod_spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": server_engine.termination_grace_seconds(),
        "securityContext": pod.pod_security_context(settings.pod_fs_group),
        "automountServiceAccountToken": False,
        "containers": [container],
        "volumes": volumes.volumes,
        **pod.scheduling(res.node_selector, res.tolerations, res.priority_class_name),
    }
    template_meta = {
        "labels": server_labels(owner),
        "annotations": {naming.ANNOTATION_CONFIG_HASH: restart_hash(config)},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(naming.server_name(owner.name), owner, server_labels(owner)),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": selector_labels(owner)},
            **rollout_strategy(spec),
            "template": {"metadata": template_meta, "spec": pod_spec},
        },
    }


def rollout_strategy(spec: ModelServeSpec) -> dict[str, Any]:
    """GPU servers replace pods one at a time without a surge pod: a rollout never needs a spare GPU (nor a second
    attachment of a ReadWriteOnce volume on another node). CPU servers keep the default 25% surge."""
    if spec.resources.gpus == 0:
        return {}
    return {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}}


def server_service(owner: Owner, spec: ModelServeSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(naming.server_name(owner.name), owner, server_labels(owner)),
        "spec": {
            "type": spec.service.type,
            "selector": selector_labels(owner),
            "ports": [{"name": PORT_NAME, "port": spec.service.port, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }


def service_url(owner: Owner, spec: ModelServeSpec, cluster_domain: str) -> str:
    """In-cluster base URL of the OpenAI-compatible API."""
    host = f"{naming.server_name(owner.name)}.{owner.namespace}.svc.{cluster_domain}"
    return f"http://{host}:{spec.service.port}/v1"
