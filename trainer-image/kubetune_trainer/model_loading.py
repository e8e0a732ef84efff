"""Load the base model and tokenizer from the Hub or a volume, quantized for QLoRA, ready for a LoRA adapter."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from kubetune.api import ModelSource
from kubetune.api.runtime import ENV_HF_TOKEN, resolve_pvc_path
from kubetune.model_cache import cache_root, ensure_cached
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, PreTrainedTokenizerBase

from .device import DeviceInfo, ResolvedPrecision
from .errors import ModelLoadError
from .quantized_cpu import keep_4bit_training_layout
from .retries import with_retries_or

log = logging.getLogger(__name__)

# Used only when a tokenizer has no chat template, so chat data still renders the same way at serving time
# (the template is saved with the adapter's tokenizer).
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_WEIGHT_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class ModelLocation:
    """Where `from_pretrained` reads from, and the arguments that go with it (token kept out of repr)."""

    path: str
    revision: str | None
    trust_remote_code: bool
    local_only: bool = False
    """The files are complete in the shared model cache: load them without contacting the Hub."""
    token_env: str = ENV_HF_TOKEN
    """The environment variable holding this model's read token (an augmentation model may have its own)."""

    def kwargs(self) -> dict[str, Any]:
        arguments: dict[str, Any] = {"trust_remote_code": self.trust_remote_code}
        if self.revision:
            arguments["revision"] = self.revision
        if self.local_only:
            arguments["local_files_only"] = True
        token = os.environ.get(self.token_env)
        if token:
            arguments["token"] = token
        return arguments


def locate_model(source: ModelSource, field: str = "baseModel", token_env: str = ENV_HF_TOKEN) -> ModelLocation:
    """A Hub id (fetched once into the shared model cache when the pod has one), or the mounted folder of a PVC
    reference (which must exist). `field` names the spec field in errors; `token_env` holds its read token."""
    if source.name is not None:
        root = cache_root()
        if root is None:
            return ModelLocation(source.name, source.revision, source.trust_remote_code, token_env=token_env)
        name, token = source.name, os.environ.get(token_env) or None
        commit = with_retries_or(
            f"fetching {name!r} into the model cache",
            lambda: ensure_cached(root, name, source.revision, token, source.trust_remote_code),
            lambda error: ModelLoadError(
                f"{field}.name: cannot fetch {name!r} into the model cache {root}: {type(error).__name__}: {error}"
            ),
        )
        return ModelLocation(name, commit, source.trust_remote_code, local_only=True, token_env=token_env)
    assert source.pvc is not None
    path = resolve_pvc_path(source.pvc)
    if not Path(path, "config.json").is_file():
        raise ModelLoadError(
            f"{field}.pvc: no model at {path} (expected a Hugging Face model folder with config.json on claim "
            f"{source.pvc.claim_name!r}, path {source.pvc.path!r})"
        )
    return ModelLocation(path, None, source.trust_remote_code, token_env=token_env)


def _load_error(what: str, location: ModelLocation, error: Exception) -> ModelLoadError:
    # The message of a Hub error never contains the token; only the id, the revision and the reason.
    hint = " (offline: HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") == "1" else ""
    return ModelLoadError(f"cannot load the {what} from {location.path!r}{hint}: {type(error).__name__}: {error}")


def load_tokenizer(location: ModelLocation) -> PreTrainedTokenizerBase:
    """The tokenizer, with a pad token and a chat template guaranteed."""
    tokenizer = with_retries_or(
        f"loading the tokenizer from {location.path!r}",
        lambda: AutoTokenizer.from_pretrained(location.path, **location.kwargs()),
        lambda error: _load_error("tokenizer", location, error),
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    return tokenizer


def load_model(
    location: ModelLocation,
    precision: ResolvedPrecision,
    device: DeviceInfo,
    quantization: BitsAndBytesConfig | None,
    gradient_checkpointing: bool,
) -> torch.nn.Module:
    """The base model in the training precision; quantized and prepared for k-bit training for QLoRA."""
    arguments = location.kwargs()
    arguments["dtype"] = _WEIGHT_DTYPES[precision] if device.is_cuda else torch.float32
    if quantization is not None:
        arguments["quantization_config"] = quantization
        # A quantized model is placed at load time; each DDP process takes its own GPU.
        arguments["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))} if device.is_cuda else {"": "cpu"}
    model = with_retries_or(
        f"loading the base model from {location.path!r}",
        lambda: AutoModelForCausalLM.from_pretrained(location.path, **arguments),
        lambda error: _load_error("base model", location, error),
    )
    if quantization is not None:
        from peft import prepare_model_for_kbit_training

        # Before any forward: an evaluation would otherwise repack 4-bit layers into bitsandbytes' CPU inference
        # layout, which has no backward (see quantized_cpu).
        keep_4bit_training_layout(model)
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False} if gradient_checkpointing else None,
        )
    model.config.use_cache = False
    log.info("loaded base model %s (%s, %s)", location.path, precision, "quantized" if quantization else "full")
    return model
