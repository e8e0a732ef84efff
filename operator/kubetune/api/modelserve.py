"""The ModelServe kind: serve a base model with one or more LoRA adapters over an OpenAI-compatible API."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import (
    ApiModel,
    Dns1123Label,
    ExtendedResourceName,
    NodeSelector,
    ObjectName,
    Quantity,
    ShortText,
    nested_default,
)
from .conditions import Condition
from .engines import EngineName, VllmSpec
from .sources import ModelSource, PvcPath, QuantizationSpec, SecretKeyRef, Toleration, exactly_one
from .storage import ModelCacheSpec

VLLM_NEEDS_GPUS = (
    "engine vllm needs resources.gpus >= 1 (the vLLM server image is built for CUDA), or an image with a CPU "
    "build of vLLM; on CPU use engine transformers or auto"
)
ModelServePhase = Literal["Pending", "WaitingForAdapters", "Deploying", "Ready", "Failed"]
MAX_ADAPTERS = 32
MAX_TOP_K = 1 << 20
"""Largest top_k accepted (above any vocabulary; larger values mean the whole vocabulary, as 0)."""
MIN_REPETITION_PENALTY, MAX_REPETITION_PENALTY = 0.01, 100.0
"""repetition_penalty's range: beyond it logits divided or multiplied by it overflow float32 (inf, then NaN)."""


class FineTuneJobRef(ApiModel):
    """A FineTuneJob in the same namespace whose adapter is served once it has succeeded."""

    name: ObjectName
    """Name of the FineTuneJob."""


class AdapterSpec(ApiModel):
    """One LoRA adapter, selected by clients with `model: <name>`."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "[has(self.fineTuneJobRef), has(self.pvc)].exists_one(x, x)",
                    "message": "an adapter needs exactly one of fineTuneJobRef, pvc",
                }
            ]
        }
    }

    name: Dns1123Label
    """The model name clients send to use this adapter (DNS-1123 label, unique in this ModelServe)."""

    fine_tune_job_ref: FineTuneJobRef | None = None
    """Take the adapter a FineTuneJob produced; the server waits until that job has succeeded."""

    pvc: PvcPath | None = None
    """Take an adapter already on a volume (a folder with adapter_config.json)."""

    @model_validator(mode="after")
    def _one_source(self) -> AdapterSpec:
        exactly_one(self, ("fine_tune_job_ref", "pvc"), f"adapter {self.name!r}")
        return self


class ServeResourceSpec(ApiModel):
    """Compute for each server replica and where it may run."""

    gpus: int = Field(default=1, ge=0, le=16)
    """GPUs per replica; 0 serves on CPU (small models only)."""

    gpu_resource_name: ExtendedResourceName = "nvidia.com/gpu"
    """Extended resource name of the GPU."""

    cpu: Quantity | None = None
    """CPU request and limit, e.g. '4'."""

    memory: Quantity | None = None
    """Memory request and limit, e.g. '32Gi'."""

    node_selector: NodeSelector = Field(default_factory=dict)
    """Node labels the pods must match."""

    tolerations: list[Toleration] = Field(default_factory=list, max_length=64)
    """Taints the pods tolerate."""

    priority_class_name: ObjectName | None = None
    """PriorityClass of the server pods."""


class ServiceSpec(ApiModel):
    """How the server is exposed inside (or outside) the cluster."""

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    """Kubernetes Service type."""

    port: int = Field(default=8000, ge=1, le=65535)
    """Service port for HTTP."""


class GenerationSpec(ApiModel):
    """Generation defaults and limits enforced by the server."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "self.maxNewTokens <= self.maxNewTokensLimit",
                    "message": "maxNewTokens must not exceed maxNewTokensLimit",
                },
                {
                    # The schema's minimum alone does not hold: kube-apiserver checks an integer value (0, -1)
                    # against the bound truncated to an integer (0), so repetitionPenalty: 0 would pass it.
                    "rule": "!has(self.repetitionPenalty) || (self.repetitionPenalty >= "
                    f"{MIN_REPETITION_PENALTY} && self.repetitionPenalty <= {MAX_REPETITION_PENALTY})",
                    "message": f"repetitionPenalty must be between {MIN_REPETITION_PENALTY} and "
                    f"{MAX_REPETITION_PENALTY:g} (1 is off)",
                },
            ]
        }
    }

    max_new_tokens: int = Field(default=256, ge=1, le=32768)
    """Default number of new tokens when a request does not say."""

    max_new_tokens_limit: int = Field(default=2048, ge=1, le=32768)
    """Largest max_tokens a request may ask for."""

    max_prompt_tokens: int = Field(default=4096, ge=16, le=131072)
    """Longest prompt accepted, in tokens."""

    temperature: float = Field(default=0.7, ge=0, le=2)
    """Default sampling temperature (0 is greedy)."""

    top_p: float = Field(default=0.9, gt=0, le=1)
    """Default nucleus sampling probability mass."""

    top_k: int | None = Field(default=None, ge=-1, le=MAX_TOP_K)
    """Default top-k: sample only among the k most likely tokens (vLLM's extension of the OpenAI API; requests
    send `top_k`). Empty, 0 or -1: off. Greedy requests (temperature 0) take the most likely token either way."""

    repetition_penalty: float | None = Field(default=None, ge=MIN_REPETITION_PENALTY, le=MAX_REPETITION_PENALTY)
    """Default repetition penalty (CTRL / Hugging Face / vLLM): the logit of every token already in the prompt or
    the answer is divided by it when positive and multiplied by it when negative, so values above 1 discourage
    repeats (the tutorial uses 1.1 to 1.2) and values below 1 encourage them. Empty or 1: off. vLLM takes any
    positive number; kubetune bounds it to 0.01-100, where logits stay finite in float32 (far beyond any useful
    value: 2 already all but bans a repeat)."""

    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    """Default OpenAI frequency penalty: subtracted from a token's logit once per time it already occurs in the
    answer generated so far (not the prompt, as vLLM counts). Positive values curb verbatim repetition. Empty or
    0: off."""

    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    """Default OpenAI presence penalty: subtracted once from the logit of every token that already occurs in the
    answer generated so far, pushing towards new tokens. Empty or 0: off."""

    max_batch_size: int = Field(default=16, ge=1, le=256)
    """Most requests decoded together in one batch (vLLM: max_num_seqs; raise it for vLLM on GPUs, whose paged
    cache holds many more sequences)."""

    max_step_tokens: int = Field(default=512, ge=16, le=65536)
    """Most tokens one engine step feeds the model: a token per decoding request plus a chunk of the prompts
    joining the batch. Long prompts are prefilled in such chunks, so requests already streaming keep getting
    tokens meanwhile. Transformers engine only: vLLM chunks prefills with its own scheduler budget."""

    kv_cache_tokens: int | None = Field(default=None, ge=16, le=16777216)
    """Transformers engine: most KV-cache tokens the batch may grow to (rows x the longest prompt + max_tokens,
    as its cache is one padded block); a request that does not fit waits for rows to finish, and one that needs
    more alone is refused. Empty: on a GPU what 80% of its memory left free after loading holds, on CPU only
    maxBatchSize limits admission. vLLM: the size of its paged cache (empty: from gpuMemoryUtilization)."""

    @model_validator(mode="after")
    def _limits(self) -> GenerationSpec:
        if self.max_new_tokens > self.max_new_tokens_limit:
            raise ValueError(
                f"maxNewTokens ({self.max_new_tokens}) must not exceed maxNewTokensLimit ({self.max_new_tokens_limit})"
            )
        return self


class ModelServeSpec(ApiModel):
    """Desired state of a ModelServe."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.baseModel) || size(self.adapters) > 0",
                    "message": "a ModelServe needs baseModel or at least one adapter",
                },
                {
                    "rule": "self.adapters.all(a, self.adapters.exists_one(b, b.name == a.name))",
                    "message": "adapter names must be unique",
                },
                {
                    "rule": "!has(self.mergeAdapter) || !self.mergeAdapter || size(self.adapters) == 1",
                    "message": "mergeAdapter needs exactly one adapter",
                },
                {
                    "rule": "has(self.baseModel) || size(self.adapters) == 0 || has(self.adapters[0].fineTuneJobRef)",
                    "message": "baseModel is required when the first adapter comes from a pvc",
                },
                {
                    "rule": "self.engine != 'vllm' || self.resources.gpus > 0 || has(self.image)",
                    "message": VLLM_NEEDS_GPUS,
                },
            ]
        }
    }

    base_model: ModelSource | None = None
    """The base model; empty uses the base model of the first adapter's FineTuneJob."""

    adapters: list[AdapterSpec] = Field(default_factory=list, max_length=MAX_ADAPTERS)
    """LoRA adapters to serve on the base model; a request's `model` field picks one (or the base)."""

    quantization: QuantizationSpec | None = None
    """Load the base model in 4 or 8 bits (GPU only) to save memory."""

    merge_adapter: bool = False
    """Merge the single adapter into the base weights for faster generation (no per-request adapter choice)."""

    replicas: int = Field(default=1, ge=0, le=100)
    """Server pods. Replicas on several nodes need ReadWriteMany or ReadOnlyMany adapter volumes."""

    resources: ServeResourceSpec = nested_default(ServeResourceSpec)
    """Compute and placement of each replica."""

    service: ServiceSpec = nested_default(ServiceSpec)
    """Service exposure."""

    generation: GenerationSpec = nested_default(GenerationSpec)
    """Generation defaults and limits."""

    api_key_secret_ref: SecretKeyRef | None = None
    """Secret holding the API key clients must send as 'Authorization: Bearer <key>'; empty means no auth."""

    image: ShortText | None = None
    """Server image override; empty uses the operator's configured server image (its vLLM image for the vLLM
    engine)."""

    engine: EngineName = "transformers"
    """Inference engine: `transformers` (kubetune's continuous batching on transformers + PEFT; any
    architecture, CPU or GPU), `vllm` (vLLM's engine with its multi-LoRA kernels: several times faster on
    GPUs, for the architectures vLLM supports) or `auto` (vLLM on GPUs, falling back to transformers for an
    architecture vLLM lacks; transformers on CPU)."""

    vllm: VllmSpec = nested_default(VllmSpec)
    """Settings of the vLLM engine."""

    model_cache: ModelCacheSpec | None = None
    """Where a Hub base model is downloaded: the namespace's shared model cache claim (filled by the first trainer
    or server that needs the model), or a size-limited scratch volume of each replica; empty follows the operator's
    defaults."""
    runtime_name: ObjectName | None = None
    """FineTuneRuntime (cluster-scoped, owned by the platform admins) whose server image, GPU pool, limits and
    policy apply; empty uses the runtime whose defaultForNamespaces lists this namespace, else the operator's default
    runtime, if one is configured."""

    @model_validator(mode="after")
    def _adapters(self) -> ModelServeSpec:
        if self.base_model is None and not self.adapters:
            raise ValueError("a ModelServe needs baseModel or at least one adapter")
        names = [adapter.name for adapter in self.adapters]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"adapter names must be unique; repeated: {', '.join(duplicates)}")
        if self.merge_adapter and len(self.adapters) != 1:
            raise ValueError(f"mergeAdapter needs exactly one adapter (got {len(self.adapters)})")
        if self.engine == "vllm" and self.resources.gpus == 0 and self.image is None:
            raise ValueError(VLLM_NEEDS_GPUS)
        if self.base_model is None and self.adapters[0].fine_tune_job_ref is None:
            raise ValueError(
                "baseModel is required when the first adapter comes from a pvc "
                "(only a fineTuneJobRef says which base model it was trained on)"
            )
        return self


class ResolvedAdapter(ApiModel):
    """An adapter the server loads, with the volume it was resolved to."""

    name: Dns1123Label
    """Model name clients use."""

    pvc: PvcPath
    """Claim and folder holding the adapter."""

    fine_tune_job: ObjectName | None = None
    """The FineTuneJob it came from, if any."""


AdapterState = Literal["Pending", "Loaded", "Refused", "Unknown"]


class ServedAdapter(ResolvedAdapter):
    """A resolved adapter with its state as the ready server replicas report it (their GET /adapters)."""

    state: AdapterState = "Pending"
    """Loaded: every ready replica that answered serves it. Refused: a replica would not load it (see message).
    Pending: not loaded yet (no replica ready, or a replica has not read the new serve.json yet). Unknown: no ready
    replica answered the operator."""

    loaded_replicas: int = Field(default=0, ge=0)
    """Ready server replicas that serve this adapter from this volume."""

    message: str | None = Field(default=None, max_length=4096)
    """Why it is not Loaded (a replica's refusal reason, or how many replicas have it)."""


class ModelServeStatus(ApiModel):
    """Observed state of a ModelServe."""

    phase: ModelServePhase = "Pending"
    """Pending, WaitingForAdapters, Deploying, Ready or Failed."""

    conditions: list[Condition] = Field(default_factory=list, max_length=32)
    """AdaptersReady (resolved), AdaptersLoaded (as the servers report), Available, Progressing and Ready."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The metadata.generation the status describes."""

    ready_replicas: int = Field(default=0, ge=0)
    """Server pods ready to answer."""

    replicas: int = Field(default=0, ge=0)
    """Server pods wanted."""

    url: str | None = Field(default=None, max_length=2048)
    """In-cluster base URL of the OpenAI-compatible API."""

    adapters: list[ServedAdapter] = Field(default_factory=list, max_length=MAX_ADAPTERS)
    """Adapters as resolved to volumes, each with its state on the server replicas."""

    adapter_names: str | None = Field(default=None, max_length=4096)
    """Comma-separated adapter names (for kubectl get)."""

    base_model: ModelSource | None = None
    """The base model being served."""

    deployment_name: ObjectName | None = None
    """Name of the server Deployment."""

    message: str | None = Field(default=None, max_length=32768)
    """Latest human-readable message."""
