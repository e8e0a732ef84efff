"""Children of a FineTuneJob: spec ConfigMap, output claim, trainer RBAC and the batch/v1 Job."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from kubetune.api import runtime
from kubetune.api.augmentation import AugmentationModel
from kubetune.api.finetunejob import FineTuneJobSpec
from kubetune.api.sources import PvcPath

from .. import naming
from ..settings import OperatorSettings
from . import distributed, kueue, pod, storage
from .meta import Owner, labels, object_meta

TRAINER_MODULE = "kubetune_trainer"
FAIL_AT_ONCE = (runtime.TrainerExit.INVALID_INPUT, runtime.TrainerExit.OUT_OF_MEMORY)
RETRY_UNCOUNTED = (runtime.TrainerExit.PREEMPTED,)


def trainer_labels(owner: Owner) -> dict[str, str]:
    return labels("trainer", owner.name, naming.LABEL_FINETUNEJOB)


def output_location(name: str, spec: FineTuneJobSpec, run_id: str | None = None) -> PvcPath:
    """The claim and folder the trainer writes to: the given claim, or the one the operator creates; with
    `run_id` (the FineTuneJob's uid, always in a cluster) the run's own folder `runs/<uid>` under it, so a
    FineTuneJob deleted and created again under the same name never meets the old one's checkpoints."""
    if spec.output.pvc is not None:
        base = PvcPath(claim_name=spec.output.pvc.claim_name, path=spec.output.pvc.path)
    else:
        base = PvcPath(claim_name=naming.output_claim(name), path="")
    return storage.run_folder(base, run_id) if run_id else base


def spec_configmap(owner: Owner, spec: FineTuneJobSpec) -> dict[str, Any]:
    """The validated spec (defaults filled in, camelCase) as the trainer's input file."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(naming.spec_configmap(owner.name), owner, trainer_labels(owner)),
        "data": {runtime.SPEC_FILE: runtime.spec_file_text(spec)},
    }


def output_claim(owner: Owner, spec: FineTuneJobSpec) -> dict[str, Any]:
    """The claim the operator creates when spec.output names none; unowned when output.keep is set."""
    claim_spec: dict[str, Any] = {
        "accessModes": [spec.output.access_mode],
        "resources": {"requests": {"storage": str(spec.output.storage_size)}},
    }
    if spec.output.storage_class_name:
        claim_spec["storageClassName"] = spec.output.storage_class_name
    meta = object_meta(naming.output_claim(owner.name), owner, trainer_labels(owner), owned=not spec.output.keep)
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": claim_spec}


REPORT_COMPONENT = "trainer-report"


def report_configmap(owner: Owner) -> dict[str, Any]:
    """The trainer's own report object: it patches `data.progress` and `data.metrics` (JSON); the operator copies
    what validates into the FineTuneJob's status. Nothing the trainer writes here can set phase, conditions or
    output, and ModelServes read only the FineTuneJob."""
    meta = object_meta(
        naming.report_configmap(owner.name), owner, labels(REPORT_COMPONENT, owner.name, naming.LABEL_FINETUNEJOB)
    )
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {}}


def trainer_rbac(owner: Owner) -> list[dict[str, Any]]:
    """ServiceAccount + Role + RoleBinding letting the trainer read and patch its own report ConfigMap, nothing else
    (no access to the FineTuneJob or its status: a trainer running user-chosen code cannot forge phase or output)."""
    name = naming.trainer_account(owner.name)
    meta = object_meta(name, owner, trainer_labels(owner))
    rules = [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": [naming.report_configmap(owner.name)],
            "verbs": ["get", "patch"],
        },
    ]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta, "automountServiceAccountToken": True},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta, "rules": rules},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": owner.namespace}],
        },
    ]


def augmentation_models(spec: FineTuneJobSpec) -> list[AugmentationModel]:
    """The models dataset.augmentation loads besides the base model (defaults resolved)."""
    augmentation = spec.dataset.augmentation
    return augmentation.models(spec.base_model) if augmentation is not None else []


def trainer_model_storage(spec: FineTuneJobSpec, settings: OperatorSettings) -> storage.ModelStorage:
    """Where the trainer downloads a Hub base model, augmentation model or dataset: the shared model cache, or its
    scratch volume."""
    hub_models = [spec.base_model, *(model.source for model in augmentation_models(spec))]
    needs_hub = any(model.name is not None for model in hub_models)
    needs_hub = needs_hub or any(source.hf is not None for source in spec.dataset.sources())
    return storage.model_storage(spec.model_cache, needs_hub, settings)


def trainer_volumes(
    owner: Owner, spec: FineTuneJobSpec, models: storage.ModelStorage | None = None, store: PvcPath | None = None
) -> pod.Volumes:
    """Spec file, output claim (read-write), input claims and ConfigMaps (read-only), the model cache or scratch
    volume, the adapter store (read-write), /dev/shm."""
    volumes = pod.Volumes()
    volumes.add(
        pod.configmap_volume("spec", naming.spec_configmap(owner.name), [runtime.SPEC_FILE]),
        pod.mount("spec", runtime.SPEC_DIR, read_only=True),
    )
    output = output_location(owner.name, spec)
    volumes.add_claim("output", output.claim_name, runtime.claim_mount_path(output.claim_name, runtime.PVC_ROOT), False)
    data = spec.dataset.sources()  # the dataset itself, or every source of its mix
    model_claims = [model.source.pvc for model in augmentation_models(spec)]  # dataset.augmentation's models
    for claim in (spec.base_model.pvc, *(source.pvc for source in data), *model_claims):
        if claim is not None:
            path = runtime.claim_mount_path(claim.claim_name, runtime.PVC_ROOT)
            volumes.add_claim(naming.volume_name("pvc", claim.claim_name), claim.claim_name, path, True)
    for source in data:
        if source.config_map is not None:
            name = source.config_map.name
            folder = str(PurePosixPath(runtime.CONFIGMAP_ROOT) / name)
            volumes.add(
                pod.configmap_volume(naming.volume_name("cm", name), name),
                pod.mount(naming.volume_name("cm", name), folder, read_only=True),
            )
    if models is not None:
        storage.add_model_storage(volumes, models)
    if store is not None:
        mount_path = runtime.claim_mount_path(store.claim_name, runtime.PVC_ROOT)
        volumes.add_claim(naming.volume_name("pvc", store.claim_name), store.claim_name, mount_path, False)
    volumes.add(*pod.shm_volume(str(spec.resources.shm_size)))
    return volumes


def trainer_env(
    owner: Owner, spec: FineTuneJobSpec, models: storage.ModelStorage, store: PvcPath | None = None
) -> list[dict[str, Any]]:
    env = [
        pod.env_value(runtime.ENV_JOB_NAME, owner.name),
        pod.env_value(runtime.ENV_NAMESPACE, owner.namespace),
        pod.env_value(runtime.ENV_REPORT_CONFIGMAP, naming.report_configmap(owner.name)),
        *storage.model_storage_env(models),
    ]
    if store is not None:
        env.append(pod.env_value(runtime.ENV_ADAPTER_STORE, runtime.resolve_pvc_path(store, runtime.PVC_ROOT)))
    # Two tokens, each for its one use: the base model's (read) and the push target's (write, output.hub); a read
    # token is never handed to the push, nor a write token to every download.
    if spec.base_model.token_secret_ref is not None:
        env.append(pod.env_secret(runtime.ENV_HF_TOKEN, spec.base_model.token_secret_ref))
    for model in augmentation_models(spec):  # an augmentation model's own token, under its own variable
        if not model.is_base_model and model.source.token_secret_ref is not None:
            env.append(pod.env_secret(runtime.AUGMENTATION_TOKEN_ENV[model.field], model.source.token_secret_ref))
    if spec.output.hub is not None:
        env.append(pod.env_secret(runtime.ENV_HF_PUSH_TOKEN, spec.output.hub.token_secret_ref))
    return env


def tracking_env_from(spec: FineTuneJobSpec) -> list[dict[str, Any]]:
    """The MLflow / W&B Secrets, referenced whole (envFrom): their keys are named like the variables the
    libraries read, and their values stay in the Secret; the kubelet resolves them when it starts the pod."""
    return [{"secretRef": {"name": name}} for name in spec.tracking.secret_names()]


def pod_failure_policy() -> dict[str, Any]:
    """Bad input and out-of-memory fail the Job at once; evictions and preemptions do not count, whether the
    pod carries the DisruptionTarget condition or the trainer says it checkpointed and stopped on SIGTERM
    (PREEMPTED). Everything else (network errors after the trainer's own retries included) counts against
    backoffLimit."""
    return {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": naming.TRAINER_CONTAINER,
                    "operator": "In",
                    "values": [int(code) for code in FAIL_AT_ONCE],
                },
            },
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {
                "action": "Ignore",
                "onExitCodes": {
                    "containerName": naming.TRAINER_CONTAINER,
                    "operator": "In",
                    "values": [int(code) for code in RETRY_UNCOUNTED],
                },
            },
        ]
    }


def trainer_job(owner: Owner, spec: FineTuneJobSpec, settings: OperatorSettings) -> dict[str, Any]:
    output = output_location(owner.name, spec, owner.uid)
    folder = runtime.resolve_pvc_path(output, runtime.PVC_ROOT)
    models = trainer_model_storage(spec, settings)
    store = storage.adapter_store_location(owner.name, owner.uid, settings)
    volumes = trainer_volumes(owner, spec, models, store)
    res = spec.resources
    several = distributed.is_distributed(spec)
    container = {
        "name": naming.TRAINER_CONTAINER,
        "image": spec.image or settings.trainer_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["python", "-m", runtime.TRAINER_LAUNCH_MODULE if several else TRAINER_MODULE],
        "args": ["--spec", f"{runtime.SPEC_DIR}/{runtime.SPEC_FILE}", "--output", folder],
        "env": trainer_env(owner, spec, models, store) + (distributed.launch_env(owner, spec) if several else []),
        "resources": storage.with_scratch_request(
            pod.resources(
                res.cpu,
                res.memory,
                res.gpus,
                res.gpu_resource_name,
                settings.trainer_cpu,
                settings.trainer_memory,
                settings.trainer_cpu_request,
                settings.trainer_memory_request,
            ),
            models,
        ),
        "securityContext": pod.container_security_context(),
        "volumeMounts": volumes.mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    env_from = tracking_env_from(spec)
    if env_from:
        container["envFrom"] = env_from
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": spec.termination_grace_period_seconds,
        "serviceAccountName": naming.trainer_account(owner.name),
        "securityContext": pod.pod_security_context(settings.pod_fs_group),
        "containers": [container],
        "volumes": volumes.volumes,
        **pod.scheduling(res.node_selector, res.tolerations, res.priority_class_name),
    }
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.backoff_limit,
        "suspend": spec.suspend,
        "podFailurePolicy": pod_failure_policy(),
        "template": {"metadata": {"labels": trainer_labels(owner)}, "spec": pod_spec},
    }
    if res.nodes > 1:
        job_spec = distributed.as_indexed(job_spec, owner, res.nodes)
    if spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    if spec.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": object_meta(naming.job_name(owner.name), owner, trainer_labels(owner)),
        "spec": job_spec,
    }
    return kueue.with_queueing(job, spec)


def trainer_children(owner: Owner, spec: FineTuneJobSpec, settings: OperatorSettings) -> list[dict[str, Any]]:
    """All children in creation order; the Job comes last, so an existing Job implies the rest exist."""
    children = [spec_configmap(owner, spec)]
    if spec.output.pvc is None:
        children.append(output_claim(owner, spec))
    children.append(report_configmap(owner))
    if spec.resources.nodes > 1:
        children.append(distributed.rendezvous_service(owner, trainer_labels(owner)))
    children.extend(trainer_rbac(owner))
    children.append(trainer_job(owner, spec, settings))
    return children
