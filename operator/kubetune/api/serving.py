"""The server's configuration file (`serve.json`): what the operator writes and the server reads.

It lives in a ConfigMap mounted into the server pods, so kubelet refreshes it in place when the
ModelServe changes; the server watches it and adds or removes adapters without a restart.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import ApiModel
from .engines import EngineName, VllmSpec
from .modelserve import MAX_ADAPTERS, GenerationSpec, ResolvedAdapter
from .sources import ModelSource, PvcPath, QuantizationSpec

ADAPTERS_PATH = "/adapters"
"""Where a server replica reports its adapters (GET, no API key: names, volumes and refusal reasons only)."""


class ServeConfig(ApiModel):
    """Everything the server needs to know about what to serve."""

    base_model: ModelSource
    """The base model."""

    served_base_name: str = Field(default="base", max_length=253)
    """The model name clients use for the bare base model."""

    adapters: list[ResolvedAdapter] = Field(default_factory=list, max_length=MAX_ADAPTERS)
    """Adapters by client-facing name and volume location."""

    quantization: QuantizationSpec | None = None
    """Load the base model quantized (GPU only)."""

    merge_adapter: bool = False
    """Merge the single adapter into the base weights."""

    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    """Generation defaults and limits."""

    ignore_base_mismatch: bool = False
    """Load adapters even when their adapter_config.json names another base model."""

    engine: EngineName = "transformers"
    """The inference engine (`auto`: vLLM where CUDA and the architecture allow, else transformers)."""

    vllm: VllmSpec = Field(default_factory=VllmSpec)
    """Settings of the vLLM engine."""


class ReplicaAdapter(ApiModel):
    """One adapter of the serve.json a server replica last read, as that replica serves it."""

    name: str = Field(max_length=253)
    """The model name clients use."""

    pvc: PvcPath
    """The volume and folder it was asked to load (tells an old version from a replacement)."""

    state: Literal["Loaded", "Loading", "Refused"]
    """Loaded (requests may name it), Loading (queued for the engine), Refused (see message)."""

    message: str | None = Field(default=None, max_length=4096)
    """Why it was refused."""


class ReplicaAdapters(ApiModel):
    """The body of GET /adapters: what one replica serves; the operator aggregates them into ModelServe status."""

    adapters: list[ReplicaAdapter] = Field(default_factory=list, max_length=MAX_ADAPTERS)
    """Every adapter of the serve.json the replica last applied."""
