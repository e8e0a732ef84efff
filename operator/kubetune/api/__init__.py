"""The kubetune API: the one definition of FineTuneJob and ModelServe (imports nothing but pydantic)."""

from .base import API_GROUP, API_VERSION, GROUP_VERSION, ApiModel
from .conditions import Condition
from .errors import format_validation_error, validation_messages
from .finetunejob import (
    ALL_LINEAR,
    DEFAULT_TARGET_MODULES,
    DatasetSpec,
    EvaluationSpec,
    FineTuneJobSpec,
    FineTuneJobStatus,
    LoraSpec,
    OutputSpec,
    Progress,
    ResourceSpec,
    TrainingMetrics,
    TrainingSpec,
)
from .modelserve import AdapterSpec, GenerationSpec, ModelServeSpec, ModelServeStatus, ResolvedAdapter
from .resources import FineTuneJob, ModelServe, ObjectMeta, parse_resource
from .serving import ServeConfig
from .sources import ModelSource, PvcPath, QuantizationSpec, SecretKeyRef

__all__ = [
    "ALL_LINEAR",
    "API_GROUP",
    "API_VERSION",
    "DEFAULT_TARGET_MODULES",
    "GROUP_VERSION",
    "AdapterSpec",
    "ApiModel",
    "Condition",
    "DatasetSpec",
    "EvaluationSpec",
    "FineTuneJob",
    "FineTuneJobSpec",
    "FineTuneJobStatus",
    "GenerationSpec",
    "LoraSpec",
    "ModelServe",
    "ModelServeSpec",
    "ModelServeStatus",
    "ModelSource",
    "ObjectMeta",
    "OutputSpec",
    "Progress",
    "PvcPath",
    "QuantizationSpec",
    "ResolvedAdapter",
    "ResourceSpec",
    "SecretKeyRef",
    "ServeConfig",
    "TrainingMetrics",
    "TrainingSpec",
    "format_validation_error",
    "parse_resource",
    "validation_messages",
]
