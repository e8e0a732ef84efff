"""Operator settings, read once from environment variables into one typed, validated object."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kubetune import __version__
from kubetune.api.base import _quantity

ENV_PREFIX = "KUBETUNE_"
# The released images of this version (the names the Helm chart and the kustomize base use).
DEFAULT_TRAINER_IMAGE = f"ghcr.io/kubetune/kubetune-trainer:{__version__}"
DEFAULT_SERVER_IMAGE = f"ghcr.io/kubetune/kubetune-server:{__version__}"
DEFAULT_SERVER_VLLM_IMAGE = f"ghcr.io/kubetune/kubetune-server-vllm:{__version__}"


class SettingsError(ValueError):
    """A setting from the environment is malformed; the message names the variable."""


class OperatorSettings(BaseModel):
    """Everything configurable about the operator. Field `x` is read from env `KUBETUNE_X`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    trainer_image: str = DEFAULT_TRAINER_IMAGE
    """Image of the trainer Job, unless a FineTuneJob sets spec.image."""

    server_image: str = DEFAULT_SERVER_IMAGE
    """Image of the server Deployment, unless a ModelServe sets spec.image."""

    server_vllm_image: str = DEFAULT_SERVER_VLLM_IMAGE
    """Image of the server Deployment for ModelServes on the vLLM engine (server-image/Dockerfile.vllm)."""

    image_pull_policy: str = Field(default="IfNotPresent", pattern="^(Always|IfNotPresent|Never)$")
    """imagePullPolicy of both images."""

    default_runtime: str | None = Field(default=None, max_length=253)
    """FineTuneRuntime applied to FineTuneJobs and ModelServes that name none (spec.runtimeName); empty or missing
    in the cluster: no runtime applies to them. The Helm chart and the kustomize base set it to their shipped
    `default` runtime."""

    kueue_api_version: str = Field(default="kueue.x-k8s.io/v1beta1", pattern="^kueue[.]x-k8s[.]io/v[0-9a-z]+$")
    """Kueue API version of the Workloads the operator (de)activates when a queued FineTuneJob is suspended or
    resumed (Kueue 0.6 and later serve kueue.x-k8s.io/v1beta1; newer releases also v1beta2)."""

    watch_namespaces: tuple[str, ...] = ()
    """Namespaces to watch (comma-separated); empty watches the whole cluster."""

    trainer_cpu: str | None = None
    """CPU request/limit of trainer pods whose FineTuneJob does not set resources.cpu."""

    trainer_memory: str | None = None
    """Memory request/limit of trainer pods whose FineTuneJob does not set resources.memory."""

    trainer_cpu_request: str | None = "1"
    """CPU request (no limit) of trainer pods when neither the FineTuneJob nor `trainer_cpu` gives one: a pod
    without requests is BestEffort, the first one the kubelet evicts under node pressure. Empty: no request."""

    trainer_memory_request: str | None = "4Gi"
    """Memory request (no limit) of trainer pods when neither the FineTuneJob nor `trainer_memory` gives one (see
    `trainer_cpu_request`). Empty: no request."""

    pod_fs_group: int | None = Field(default=None, ge=1)
    """fsGroup of trainer and server pods. Unset by default: OpenShift's restricted-v2 assigns the UID and group
    itself (and refuses ones outside the namespace's range); the images run as the numeric non-root USER 1000. Set
    it (e.g. 1000) where volumes are provisioned root-owned and the pods must be able to write to them."""

    model_cache_claim: str = Field(default="", max_length=253)
    """Name of the claim, in each namespace, that keeps Hub base models for every trainer and server there (HF_HOME
    on it): the first pod downloads a model, later ones load it without a download. Empty: no shared cache unless a
    FineTuneJob or ModelServe names one (spec.modelCache.claimName); downloads go to a scratch volume."""

    model_cache_create: bool = True
    """Create `model_cache_claim` in a namespace where it is missing (never owned by any object, so deleting one
    keeps the cache). Off: the claim must exist (pods wait for it, with a FailedMount cause in the status)."""

    model_cache_size: str = "200Gi"
    """Size of a model cache claim the operator creates (a 7B model takes about 15Gi, a 70B one about 140Gi)."""

    model_cache_storage_class: str | None = None
    """StorageClass of a model cache claim the operator creates; empty uses the cluster default."""

    model_cache_access_mode: str = Field(default="ReadWriteMany", pattern="^(ReadWriteOnce|ReadWriteMany)$")
    """Access mode of a model cache claim the operator creates. ReadWriteMany (NFS, CephFS, EFS, Filestore) lets
    trainers and servers on any node share it; with ReadWriteOnce only pods on one node can use it at a time."""

    adapter_store_claim: str = Field(default="", max_length=253)
    """Name of the claim, in each namespace, that every finished adapter is also published to (by its trainer) and
    that servers mount read-only: adapters then outlive their FineTuneJob and its output claim, and adding one to a
    running ModelServe changes no volume (no restart). Empty: servers mount each trainer's output claim."""

    adapter_store_create: bool = True
    """Create `adapter_store_claim` in a namespace where it is missing (never owned by any object)."""

    adapter_store_size: str = "20Gi"
    """Size of an adapter store claim the operator creates (a LoRA adapter of a 7B model is 20-300 MiB)."""

    adapter_store_storage_class: str | None = None
    """StorageClass of an adapter store claim the operator creates; empty uses the cluster default."""

    adapter_store_access_mode: str = Field(default="ReadWriteMany", pattern="^(ReadWriteOnce|ReadWriteMany)$")
    """Access mode of an adapter store claim the operator creates: ReadWriteMany lets trainers and any number of
    server replicas on any node use it; with ReadWriteOnce a ModelServe with replicas > 1 is refused."""

    scratch_size: str = "50Gi"
    """Size limit and ephemeral-storage request of a pod's scratch volume when a Hub model is downloaded without a
    cache claim (objects override it with spec.modelCache.scratchSize); other pods get 1Gi."""

    server_cpu: str | None = None
    """CPU request/limit of server pods whose ModelServe does not set resources.cpu."""

    server_memory: str | None = None
    """Memory request/limit of server pods whose ModelServe does not set resources.memory."""

    peering: str = ""
    """kopf peering object the operator joins, and creates at startup when missing (a ClusterKopfPeering, or a
    KopfPeering in each watched namespace); kopf pauses while it is missing. Empty runs standalone (no peering)."""

    leader_election: bool = False
    """Run several replicas: the one holding the Lease below runs kopf standalone (peering is not used), the
    others wait and take over within about `leader_election_lease_seconds` when it dies (operator/leader.py)."""

    leader_election_name: str = "kubetune-operator"
    """Name of the coordination.k8s.io Lease of the leader election."""

    leader_election_namespace: str = ""
    """Namespace of that Lease; empty: the operator pod's own namespace (from its ServiceAccount), else kubetune."""

    leader_election_lease_seconds: int = Field(default=15, ge=2, le=300)
    """How long a Lease not renewed stays the leader's (client-go's default 15 s); renewals must succeed within
    two thirds of it and are tried every lease/7.5 s (10 s and 2 s by default)."""

    metrics_port: int = Field(default=8080, ge=0, le=65535)
    """Port of the Prometheus /metrics endpoint; 0 disables it."""

    liveness_endpoint: str = "http://0.0.0.0:8081/healthz"
    """kopf's liveness endpoint URL; empty disables it."""

    cluster_domain: str = "cluster.local"
    """DNS domain of the cluster, used in ModelServe status.url."""

    resync: bool = True
    """Re-reconcile unfinished FineTuneJobs and every ModelServe every 2 minutes (a safety net for lost events)."""

    workers: int = Field(default=16, ge=1, le=256)
    """Threads running synchronous handlers (each reconcile blocks one while it calls the API)."""

    kubeconfig: str | None = None
    """kubeconfig file to use outside a cluster (default: in-cluster config, then $KUBECONFIG)."""

    @field_validator(
        "trainer_cpu",
        "trainer_memory",
        "trainer_cpu_request",
        "trainer_memory_request",
        "server_cpu",
        "server_memory",
        "model_cache_size",
        "adapter_store_size",
        "scratch_size",
    )
    @classmethod
    def _quantities(cls, value: str | None) -> str | None:
        return None if value in (None, "") else _quantity(value)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorSettings:
        """Read `KUBETUNE_<FIELD>` variables (and KUBECONFIG); unknown KUBETUNE_ names are not settings."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name in cls.model_fields:
            raw = env.get("KUBECONFIG") if name == "kubeconfig" else env.get(ENV_PREFIX + name.upper())
            if raw is None:
                continue
            if name == "watch_namespaces":
                values[name] = tuple(part.strip() for part in raw.split(",") if part.strip())
            else:
                values[name] = raw
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                field = str(error["loc"][0]) if error["loc"] else "?"
                variable = "KUBECONFIG" if field == "kubeconfig" else ENV_PREFIX + field.upper()
                problems.append(f"{variable}={values.get(field)!r}: {error['msg'].removeprefix('Value error, ')}")
            raise SettingsError("invalid operator settings: " + "; ".join(problems)) from None
