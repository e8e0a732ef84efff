"""Whole custom resources (apiVersion, kind, metadata, spec, status), as users write them in YAML."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from .base import GROUP_VERSION, ApiModel, ObjectName
from .finetunejob import FineTuneJobSpec, FineTuneJobStatus
from .modelserve import ModelServeSpec, ModelServeStatus


class ObjectMeta(BaseModel):
    """The metadata fields kubetune reads; everything else Kubernetes puts here is kept as is."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: ObjectName
    namespace: ObjectName | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    generation: int | None = None
    uid: str | None = None


class FineTuneJob(ApiModel):
    """A fine-tuning run: base model + dataset + LoRA/QLoRA recipe, producing an adapter on a volume."""

    KIND: ClassVar[str] = "FineTuneJob"
    PLURAL: ClassVar[str] = "finetunejobs"

    api_version: Literal["kubetune.dev/v1alpha1"] = GROUP_VERSION
    kind: Literal["FineTuneJob"] = "FineTuneJob"
    metadata: ObjectMeta
    spec: FineTuneJobSpec
    status: FineTuneJobStatus | None = None


class ModelServe(ApiModel):
    """An inference server for a base model and its LoRA adapters."""

    KIND: ClassVar[str] = "ModelServe"
    PLURAL: ClassVar[str] = "modelserves"

    api_version: Literal["kubetune.dev/v1alpha1"] = GROUP_VERSION
    kind: Literal["ModelServe"] = "ModelServe"
    metadata: ObjectMeta
    spec: ModelServeSpec
    status: ModelServeStatus | None = None


KINDS: dict[str, type[FineTuneJob] | type[ModelServe]] = {"FineTuneJob": FineTuneJob, "ModelServe": ModelServe}


def parse_resource(document: dict[str, Any]) -> FineTuneJob | ModelServe:
    """Parse one YAML/JSON document into its kind's model (ValueError for an unknown kind)."""
    kind = document.get("kind")
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not a kubetune kind; expected one of {', '.join(KINDS)}")
    return KINDS[kind].model_validate(document)
