"""Storage choices shared by FineTuneJob and ModelServe: where Hub base models are kept between pods."""

from __future__ import annotations

from pydantic import model_validator

from .base import ApiModel, ObjectName, Quantity


class ModelCacheSpec(ApiModel):
    """Where this object's pods keep Hub base models: a claim shared by the trainers and servers of the namespace
    (the first pod downloads a model, later pods load it without a download), or a size-limited scratch volume
    of the pod. Base models from a pvc are read where they are and need neither."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "!(has(self.claimName) && has(self.disabled) && self.disabled)",
                    "message": "modelCache: set claimName or disabled, not both",
                }
            ]
        }
    }

    claim_name: ObjectName | None = None
    """An existing claim in this namespace to keep downloaded models on (ReadWriteMany where trainers and servers
    run on several nodes); empty uses the operator's default cache claim (setting model_cache_claim), if any."""

    disabled: bool = False
    """Download into the pod's scratch volume even when the operator configures a default cache claim."""

    scratch_size: Quantity | None = None
    """Size limit and ephemeral-storage request of the pod's scratch volume, which holds downloads when no cache
    claim is used (about the model's size: 15Gi for a 7B model in bf16); empty uses the operator's setting
    scratch_size."""

    @model_validator(mode="after")
    def _claim_or_disabled(self) -> ModelCacheSpec:
        if self.claim_name is not None and self.disabled:
            raise ValueError("modelCache: set claimName or disabled, not both")
        return self
