"""Where trainers and servers keep things on volumes: each run's own output folder (and finding it again), the
namespace's shared model cache, and size-limited scratch volumes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from kubetune.api import runtime
from kubetune.api.sources import PvcPath
from kubetune.api.storage import ModelCacheSpec

from .. import naming
from ..settings import OperatorSettings
from . import pod

OUTPUT_FLAG = "--output"


def run_folder(base: PvcPath, run_id: str) -> PvcPath:
    """`<base>/runs/<run_id>`: one run's checkpoints, adapter and metrics, apart from every other run's."""
    return PvcPath(claim_name=base.claim_name, path=str(PurePosixPath(base.path or ".") / runtime.RUNS_DIR / run_id))


def output_of_job(job: dict[str, Any] | None) -> PvcPath | None:
    """The output folder a trainer Job was rendered with (its `--output` argument), as a claim and path.

    The Job, not today's rendering, says where an adapter is: a Job created by an older operator writes where
    that operator told it to."""
    if job is None:
        return None
    containers = (((job.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    for container in containers:
        args = list(container.get("args") or [])
        if OUTPUT_FLAG not in args[:-1]:
            continue
        return _claim_path(PurePosixPath(args[args.index(OUTPUT_FLAG) + 1]))
    return None


# ---- the model cache and scratch volumes ------------------------------------------------------------------------
SCRATCH_VOLUME = "scratch"
SCRATCH_DIR = "/var/cache/kubetune"
SMALL_SCRATCH = "1Gi"
HF_HOME_DIR = "huggingface"
MODEL_CACHE_COMPONENT = "model-cache"


@dataclass(frozen=True)
class ModelStorage:
    """Where a pod keeps Hub downloads: the shared cache claim (mounted read-write, any pod may be the first to
    need a model), and always a scratch emptyDir with a size limit that is also its ephemeral-storage request."""

    cache_claim: str | None
    scratch_size: str

    @property
    def hf_home(self) -> str:
        if self.cache_claim is not None:
            return str(PurePosixPath(runtime.claim_mount_path(self.cache_claim, runtime.PVC_ROOT)) / HF_HOME_DIR)
        return str(PurePosixPath(SCRATCH_DIR) / HF_HOME_DIR)


def model_storage(cache: ModelCacheSpec | None, needs_hub: bool, settings: OperatorSettings) -> ModelStorage:
    """The object's choice, else the operator's default cache claim, else scratch sized for the download. A pod that
    downloads nothing from the Hub mounts no cache and gets a small scratch volume."""
    cache = cache or ModelCacheSpec()
    claim = (cache.claim_name or settings.model_cache_claim or None) if needs_hub and not cache.disabled else None
    default = settings.scratch_size if needs_hub and claim is None else SMALL_SCRATCH
    return ModelStorage(claim, str(cache.scratch_size or default))


def add_model_storage(volumes: pod.Volumes, storage: ModelStorage) -> None:
    if storage.cache_claim is not None:
        claim = storage.cache_claim
        mount_path = runtime.claim_mount_path(claim, runtime.PVC_ROOT)
        volumes.add_claim(naming.volume_name("pvc", claim), claim, mount_path, False)
    volumes.add(
        {"name": SCRATCH_VOLUME, "emptyDir": {"sizeLimit": storage.scratch_size}},
        pod.mount(SCRATCH_VOLUME, SCRATCH_DIR),
    )


def model_storage_env(storage: ModelStorage) -> list[dict[str, Any]]:
    """HF_HOME on the cache or the scratch volume; KUBETUNE_MODEL_CACHE tells the images a shared cache is there."""
    env = [pod.env_value("HF_HOME", storage.hf_home)]
    if storage.cache_claim is not None:
        env.append(pod.env_value(runtime.ENV_MODEL_CACHE, storage.hf_home))
    return env


def with_scratch_request(resources: dict[str, Any], storage: ModelStorage) -> dict[str, Any]:
    """The container's resources plus an ephemeral-storage request as large as its scratch volume's limit, so the
    scheduler only places it where that much node disk is free (no limit: the emptyDir's sizeLimit bounds it)."""
    requests = {**resources.get("requests", {}), "ephemeral-storage": storage.scratch_size}
    return {**resources, "requests": requests}


def cache_claim(namespace: str, storage: ModelStorage, settings: OperatorSettings) -> dict[str, Any] | None:
    """The namespace's default model cache claim, for the operator to create when missing; None when this pod uses
    no cache, a claim its object named (which must exist), or the operator does not create it. Never owned: the
    cache outlives every FineTuneJob and ModelServe that filled it."""
    if storage.cache_claim is None or storage.cache_claim != settings.model_cache_claim:
        return None
    if not settings.model_cache_create:
        return None
    return _shared_claim(
        namespace,
        storage.cache_claim,
        MODEL_CACHE_COMPONENT,
        settings.model_cache_size,
        settings.model_cache_access_mode,
        settings.model_cache_storage_class,
    )


def _shared_claim(
    namespace: str, name: str, component: str, size: str, access_mode: str, storage_class: str | None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": [access_mode], "resources": {"requests": {"storage": size}}}
    if storage_class:
        spec["storageClassName"] = storage_class
    meta_labels = {
        naming.LABEL_NAME: "kubetune",
        naming.LABEL_COMPONENT: component,
        naming.LABEL_MANAGED_BY: naming.MANAGED_BY,
    }
    meta = {"name": name, "namespace": namespace, "labels": meta_labels}
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": spec}


# ---- the adapter store ------------------------------------------------------------------------------------------
ADAPTER_STORE_COMPONENT = "adapter-store"


def adapter_store_location(name: str, uid: str, settings: OperatorSettings) -> PvcPath | None:
    """Where FineTuneJob `name` (uid `uid`) publishes its adapter on the namespace's adapter store, if configured."""
    if not settings.adapter_store_claim or not uid:
        return None
    path = PurePosixPath(runtime.ADAPTER_STORE_DIR) / name / uid
    return PvcPath(claim_name=settings.adapter_store_claim, path=str(path))


def store_claim(namespace: str, settings: OperatorSettings) -> dict[str, Any] | None:
    """The namespace's adapter store claim, for the operator to create when missing (never owned)."""
    if not settings.adapter_store_claim or not settings.adapter_store_create:
        return None
    return _shared_claim(
        namespace,
        settings.adapter_store_claim,
        ADAPTER_STORE_COMPONENT,
        settings.adapter_store_size,
        settings.adapter_store_access_mode,
        settings.adapter_store_storage_class,
    )


def store_of_job(job: dict[str, Any] | None) -> PvcPath | None:
    """The adapter store folder a trainer Job was rendered with (its KUBETUNE_ADAPTER_STORE), as a claim and path."""
    containers = ((((job or {}).get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    for container in containers:
        for item in container.get("env") or []:
            if item.get("name") == runtime.ENV_ADAPTER_STORE and item.get("value"):
                return _claim_path(PurePosixPath(item["value"]))
    return None


def _claim_path(folder: PurePosixPath) -> PvcPath | None:
    """`/mnt/kubetune/pvc/<claim>/<path>` as a claim and path (None outside the claim mounts)."""
    try:
        relative = folder.relative_to(runtime.PVC_ROOT)
    except ValueError:
        return None
    if not relative.parts:
        return None
    rest = PurePosixPath(*relative.parts[1:]) if len(relative.parts) > 1 else None
    return PvcPath(claim_name=relative.parts[0], path=str(rest) if rest else "")
