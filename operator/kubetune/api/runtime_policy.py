"""FineTuneRuntime: what a platform admin fixes for everyone who fine-tunes or serves (cluster-scoped).

Users fill in the recipe (model, data, LoRA, hyperparameters); the runtime fixes images, the GPU node pool and its
resource name, limits, the models allowed, the default Kueue queue and storage class, and whether users may
override the image or expose a LoadBalancer Service. A FineTuneJob or ModelServe names one in `runtimeName`, else
gets the runtime whose `defaultForNamespaces` lists its namespace, else the operator's default runtime (setting
`default_runtime`); the operator enforces it when it creates the
trainer Job or the server Deployment, and refuses a violation with condition Validated=False/PolicyViolation.
(Not to be confused with api/runtime.py, the file and environment contract between the operator and the images.)
"""

from __future__ import annotations

import fnmatch
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from .base import GROUP_VERSION, ApiModel, Dns1123Label, ExtendedResourceName, NodeSelector, ObjectName, ShortText
from .resources import ObjectMeta
from .sources import Toleration

ModelPattern = Annotated[str, Field(min_length=1, max_length=253)]
"""A Hub model id glob ('meta-llama/*', 'Qwen/Qwen2.5-*'), or 'pvc:<claim>/<path glob>' for a model on a volume."""


class FineTuneRuntimeSpec(ApiModel):
    """Images, placement and limits an admin fixes for the FineTuneJobs and ModelServes that use this runtime."""

    trainer_image: ShortText | None = None
    """Trainer image of every FineTuneJob on this runtime; empty uses the operator's configured image."""

    server_image: ShortText | None = None
    """Server image of every ModelServe on this runtime; empty uses the operator's configured image."""

    allow_image_override: bool = False
    """Let users set spec.image (arbitrary code runs with the trainer's GPUs and network); off by default."""

    node_selector: NodeSelector = Field(default_factory=dict)
    """Node labels of this runtime's GPU pool, added to every pod (a user's own entries for the same keys lose)."""

    tolerations: list[Toleration] = Field(default_factory=list, max_length=64)
    """Tolerations for the taints of this runtime's GPU pool, added to every pod."""

    gpu_resource_name: ExtendedResourceName | None = None
    """Extended resource GPUs are requested as on this pool (e.g. nvidia.com/gpu, amd.com/gpu, a MIG profile);
    replaces the user's resources.gpuResourceName."""

    max_gpus: int | None = Field(default=None, ge=0, le=64)
    """Most GPUs one trainer pod or one server replica may request; empty: no limit."""

    max_nodes: int | None = Field(default=None, ge=1, le=64)
    """Most pods (resources.nodes) one FineTuneJob may span; empty: no limit."""

    allowed_base_models: list[ModelPattern] = Field(default_factory=list, max_length=256)
    """Models users may fine-tune, serve or generate training rows with (dataset.augmentation models), as globs
    ('meta-llama/*', 'pvc:models/*'); empty allows any."""

    default_queue_name: ObjectName | None = None
    """Kueue LocalQueue for FineTuneJobs that name none (spec.queueName)."""

    storage_class_name: ObjectName | None = None
    """StorageClass of output claims the operator creates when the FineTuneJob names none."""

    allow_load_balancer: bool = False
    """Let ModelServes use service.type LoadBalancer (reachable from outside the cluster); off by default."""

    default_for_namespaces: list[Dns1123Label] = Field(default_factory=list, max_length=256)
    """Namespaces whose FineTuneJobs and ModelServes get this runtime when they name none in spec.runtimeName
    (before the operator's default). A namespace listed by two runtimes is refused (RuntimeConflict, naming both)
    until one lets go of it. Listed here so that the operator needs no read of Namespaces."""

    def allows_model(self, described: str) -> bool:
        """True when `described` (a Hub id, or 'pvc:<claim>/<path>') matches an allowed pattern (or none is set)."""
        return not self.allowed_base_models or any(
            fnmatch.fnmatchcase(described, pattern) for pattern in self.allowed_base_models
        )


class FineTuneRuntime(ApiModel):
    """A platform-owned runtime (cluster-scoped): images, GPU pool, limits and policy for fine-tuning and serving."""

    KIND: ClassVar[str] = "FineTuneRuntime"
    PLURAL: ClassVar[str] = "finetuneruntimes"

    api_version: Literal["kubetune.dev/v1alpha1"] = GROUP_VERSION
    kind: Literal["FineTuneRuntime"] = "FineTuneRuntime"
    metadata: ObjectMeta
    spec: FineTuneRuntimeSpec
