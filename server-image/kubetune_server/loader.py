"""Loading the base model, its tokenizer and LoRA adapters from the places ServeConfig names.

The base-model check lives here: an adapter records the base it was trained on in adapter_config.json,
and serving it on another base silently produces garbage, so it is refused unless the settings say otherwise.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from kubetune.api import ModelSource, QuantizationSpec
from kubetune.api.runtime import ENV_HF_TOKEN, PVC_ROOT, pvc_root, resolve_pvc_path
from kubetune.model_cache import cache_root, ensure_cached
from kubetune.quantization import bitsandbytes_config

from .errors import AdapterLoadError

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class BaseModelLocation:
    """Where the base model is loaded from, and the names under which an adapter may refer to it."""

    load_from: str
    identities: frozenset[str]
    revision: str | None = None
    trust_remote_code: bool = False
    local_only: bool = False
    """The files are complete in the shared model cache: load them without contacting the Hub."""


def through_model_cache(location: BaseModelLocation) -> BaseModelLocation:
    """A Hub model fetched once into the namespace's shared model cache (when the pod mounts one) and from then on
    loaded from it, pinned to the cached commit; anything else unchanged."""
    root = cache_root()
    if root is None or location.local_only or Path(location.load_from).is_absolute():
        return location
    token = os.environ.get(ENV_HF_TOKEN) or None
    commit = ensure_cached(root, location.load_from, location.revision, token, location.trust_remote_code)
    log.info("base model %s@%s is in the model cache %s", location.load_from, commit, root)
    return replace(location, revision=commit, local_only=True)


def _claim_relative(path: str, roots: tuple[str, ...]) -> str | None:
    """`/mnt/kubetune/pvc/models/llama` -> `models/llama`: the same folder whatever root a pod mounts it at."""
    pure = PurePosixPath(path)
    for root in roots:
        try:
            return str(pure.relative_to(root))
        except ValueError:
            continue
    return None


def _normal(path_or_id: str) -> str:
    return path_or_id.rstrip("/")


def _pvc_roots(root: str | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys([root or pvc_root(), PVC_ROOT]))


def locate_base_model(source: ModelSource, root: str | None = None) -> BaseModelLocation:
    if source.name is not None:
        return BaseModelLocation(source.name, frozenset({source.name}), source.revision, source.trust_remote_code)
    assert source.pvc is not None
    path = resolve_pvc_path(source.pvc, root)
    identities = {_normal(path)}
    relative = _claim_relative(path, _pvc_roots(root))
    if relative:
        identities.add(relative)
    return BaseModelLocation(path, frozenset(identities), None, source.trust_remote_code)


def adapter_base_name(adapter_dir: str) -> str | None:
    """The base model an adapter was trained on, as written in its adapter_config.json."""
    config_path = Path(adapter_dir) / ADAPTER_CONFIG
    if not config_path.is_file():
        raise AdapterLoadError(f"{adapter_dir} is not a LoRA adapter folder: {ADAPTER_CONFIG} is missing")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AdapterLoadError(f"{config_path} cannot be read as JSON: {exc}") from exc
    base = config.get("base_model_name_or_path")
    return str(base) if base else None


def check_adapter_base(
    name: str, adapter_dir: str, base: BaseModelLocation, ignore_mismatch: bool, root: str | None = None
) -> None:
    """Refuse an adapter trained on another base model (unless `ignore_mismatch`), with both names in the message."""
    recorded = adapter_base_name(adapter_dir)
    if recorded is None:
        log.warning(
            "adapter %r at %s does not record its base model; serving it on %s", name, adapter_dir, base.load_from
        )
        return
    candidates = {_normal(recorded)}
    relative = _claim_relative(recorded, _pvc_roots(root))
    if relative:
        candidates.add(relative)
    if candidates & base.identities:
        return
    message = (
        f"adapter {name!r} at {adapter_dir} was trained on base model {recorded!r}, but this server serves "
        f"{base.load_from!r}; serve it with its own base model, or set ignoreBaseMismatch to load it anyway"
    )
    if ignore_mismatch:
        log.warning("%s (ignored: ignoreBaseMismatch is set)", message)
        return
    raise AdapterLoadError(message)


def pick_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _dtype_for(device: str):
    import torch

    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _quantization_config(spec: QuantizationSpec):
    import torch

    return bitsandbytes_config(spec, bf16_supported=not torch.cuda.is_available() or torch.cuda.is_bf16_supported())


def load_tokenizer(location: BaseModelLocation):
    """The tokenizer, padding on the left so every row of a batch ends at its newest token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        location.load_from,
        revision=location.revision,
        token=os.environ.get(ENV_HF_TOKEN) or None,
        trust_remote_code=location.trust_remote_code,
        local_files_only=location.local_only,
    )
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(location: BaseModelLocation, quantization: QuantizationSpec | None, device: str):
    from transformers import AutoModelForCausalLM

    kwargs: dict = {
        "revision": location.revision,
        "token": os.environ.get(ENV_HF_TOKEN) or None,
        "trust_remote_code": location.trust_remote_code,
        "dtype": _dtype_for(device),
        "local_files_only": location.local_only,
    }
    if quantization is not None:
        kwargs["quantization_config"] = _quantization_config(quantization)
        kwargs["device_map"] = {"": device}
    model = AutoModelForCausalLM.from_pretrained(location.load_from, **kwargs)
    if quantization is None:
        model.to(device)
    model.eval()
    return model
