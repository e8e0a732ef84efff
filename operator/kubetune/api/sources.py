"""Where models, data and secrets come from: references shared by FineTuneJob and ModelServe."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import ApiModel, DataKey, HfRepoId, ObjectName, RelativePath, ShortText, TolerationKey


def exactly_one(model: ApiModel, fields: tuple[str, ...], where: str) -> None:
    """Raise a message that names the choices when not exactly one of `fields` is set."""
    chosen = [name for name in fields if getattr(model, name) is not None]
    if len(chosen) != 1:
        wire = [model.model_fields[name].alias or name for name in fields]
        got = ", ".join(model.model_fields[n].alias or n for n in chosen) if chosen else "none"
        raise ValueError(f"{where} needs exactly one of {', '.join(wire)} (got: {got})")


class SecretKeyRef(ApiModel):
    """A key of a Secret in the same namespace. Values are never copied into specs, status or logs."""

    name: ObjectName
    """Name of the Secret, in the namespace of the object that refers to it."""

    key: DataKey = "token"
    """Key inside the Secret whose value is used."""


class PvcPath(ApiModel):
    """A folder on a PersistentVolumeClaim in the same namespace."""

    claim_name: ObjectName
    """Name of the PersistentVolumeClaim."""

    path: RelativePath = ""
    """Folder inside the volume, relative to its root (no leading '/', no '..'); empty means the root."""


class ModelSource(ApiModel):
    """The base model: a Hugging Face Hub repository or a folder on a volume (exactly one)."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "[has(self.name), has(self.pvc)].exists_one(x, x)",
                    "message": "baseModel needs exactly one of name, pvc",
                }
            ]
        }
    }

    name: HfRepoId | None = None
    """Hugging Face Hub repository id of the base model, as 'org/name' (e.g. 'meta-llama/Llama-2-7b-hf')."""

    pvc: PvcPath | None = None
    """A folder on a PersistentVolumeClaim holding the model in Hugging Face format (config, weights, tokenizer)."""

    revision: ShortText | None = None
    """Hub branch, tag or commit to load; only with 'name'. Pin a commit for reproducible runs."""

    token_secret_ref: SecretKeyRef | None = None
    """Secret holding a Hugging Face token for gated or private models; passed to pods via secretKeyRef only."""

    trust_remote_code: bool = False
    """Allow the model repository's own Python code to run. Leave off unless you trust its author."""

    @model_validator(mode="after")
    def _one_source(self) -> ModelSource:
        exactly_one(self, ("name", "pvc"), "baseModel")
        if self.revision is not None and self.name is None:
            raise ValueError("revision is only valid with baseModel.name (a Hub model), not with a pvc")
        return self

    def describe(self) -> str:
        """A short human label for this model (printer columns, model cards)."""
        if self.name is not None:
            return self.name + (f"@{self.revision}" if self.revision else "")
        assert self.pvc is not None
        return f"pvc:{self.pvc.claim_name}/{self.pvc.path}".rstrip("/")


class QuantizationSpec(ApiModel):
    """bitsandbytes quantization of the frozen base model (QLoRA training, or lighter serving on a GPU)."""

    bits: Literal[4, 8] = 4
    """Bits per weight of the frozen base model: 4 (QLoRA) or 8."""

    type: Literal["nf4", "fp4"] = "nf4"
    """4-bit data type: nf4 (NormalFloat, the QLoRA default) or fp4. Ignored for 8 bits."""

    double_quant: bool = True
    """Quantize the quantization constants too, saving about 0.4 bits per weight."""

    compute_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    """Data type for the matrix products of quantized layers. Use float16 on GPUs without bf16 (pre-Ampere)."""


TOLERATION_RULES = (
    "a toleration with operator Exists must not have a value (Exists matches any value)",
    "a toleration without key must use operator Exists (it then tolerates every taint)",
    "tolerationSeconds is only valid with effect NoExecute",
)


class Toleration(ApiModel):
    """A Kubernetes toleration, so pods can run on tainted (e.g. GPU) nodes."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
                    "message": TOLERATION_RULES[0],
                },
                {
                    "rule": "(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')",
                    "message": TOLERATION_RULES[1],
                },
                {
                    "rule": "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
                    "message": TOLERATION_RULES[2],
                },
            ]
        }
    }

    key: TolerationKey | None = None
    """Taint key to tolerate; empty with operator Exists tolerates every taint."""

    operator: Literal["Exists", "Equal"] = "Equal"
    """Exists matches any value; Equal matches 'value'."""

    value: ShortText | None = None
    """Taint value to match with operator Equal."""

    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to tolerate; empty tolerates all effects."""

    toleration_seconds: int | None = Field(default=None, ge=0)
    """How long a NoExecute taint is tolerated before eviction; empty means forever."""

    @model_validator(mode="after")
    def _as_kubernetes_checks(self) -> Toleration:
        """The API server refuses a pod with such a toleration; say so before any pod is made."""
        if self.operator == "Exists" and self.value:
            raise ValueError(TOLERATION_RULES[0])
        if not self.key and self.operator != "Exists":
            raise ValueError(TOLERATION_RULES[1])
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError(TOLERATION_RULES[2])
        return self
