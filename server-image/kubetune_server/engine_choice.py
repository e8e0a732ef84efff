"""Which engine serves: serve.json's `engine` (`transformers`, `vllm`, or `auto`: vLLM where CUDA, the image and
the model allow, else transformers, with the reason logged).

`auto` never picks vLLM without CUDA: on a CPU vLLM is at best at par with the transformers engine (bench/
server_throughput.py), and the operator gives CPU-only ModelServes the transformers image anyway. The choice is a
pure function of the serve.json, the model's architectures and what this replica has (`Host`), so it is tested
without a GPU. A replica refuses at start, naming the packages, when the engine chosen cannot run in its image
(e.g. a 4-bit QLoRA base that falls back to transformers in an image without bitsandbytes) rather than failing
later inside a load.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from kubetune.api import ServeConfig
from kubetune.api.engines import ENGINE_AUTO, ENGINE_TRANSFORMERS, ENGINE_VLLM

from .errors import UnsupportedModel
from .loader import locate_base_model

log = logging.getLogger(__name__)

TRANSFORMERS_PACKAGES = ("peft",)
"""What the transformers engine imports beyond transformers and torch: PEFT serves the adapters."""
QUANTIZATION_PACKAGES = ("bitsandbytes", "accelerate")
"""What it needs for `quantization` (bitsandbytes' 4/8-bit layers, placed by accelerate)."""


@dataclass(frozen=True)
class Host:
    """What this replica has, as far as choosing an engine goes."""

    cuda: bool
    vllm_architectures: frozenset[str] | None
    """The architectures vLLM's model registry supports; None where vLLM is not installed."""
    installed: frozenset[str]
    """Which of TRANSFORMERS_PACKAGES and QUANTIZATION_PACKAGES are importable."""

    @classmethod
    def probe(cls, with_vllm: bool) -> Host:
        """This process's host; vLLM's registry is read only when `with_vllm` and CUDA is there (importing vLLM
        takes seconds)."""
        import torch

        cuda = torch.cuda.is_available()
        architectures = None
        if with_vllm and cuda and importlib.util.find_spec("vllm") is not None:
            from vllm import ModelRegistry

            architectures = frozenset(ModelRegistry.get_supported_archs())
        wanted = TRANSFORMERS_PACKAGES + QUANTIZATION_PACKAGES
        return cls(
            cuda=cuda,
            vllm_architectures=architectures,
            installed=frozenset(name for name in wanted if importlib.util.find_spec(name) is not None),
        )


def vllm_refusal(config: ServeConfig, architectures: list[str] | None, host: Host) -> str | None:
    """Why `auto` does not take vLLM here, or None when it does. `architectures`: the base model's config.json
    `architectures` (None for a Hub id not yet downloaded: vLLM resolves it and refuses clearly if unsupported)."""
    if not host.cuda:
        return "no CUDA device (on a CPU vLLM is no faster than the transformers engine)"
    if host.vllm_architectures is None:
        return "vLLM is not installed in this image"
    if config.merge_adapter:
        return "mergeAdapter is set (a transformers-engine setting)"
    if config.quantization is not None and config.quantization.bits != 4:
        return f"the vLLM engine quantizes in 4 bits only (quantization.bits is {config.quantization.bits})"
    if architectures and not set(architectures) & host.vllm_architectures:
        return f"vLLM does not support {', '.join(architectures)}"
    return None


def transformers_missing(config: ServeConfig, host: Host) -> list[str]:
    """The packages the transformers engine needs for this serve.json that this image lacks."""
    needed = TRANSFORMERS_PACKAGES + (QUANTIZATION_PACKAGES if config.quantization is not None else ())
    return [name for name in needed if name not in host.installed]


def choose_engine(config: ServeConfig, architectures: list[str] | None, host: Host) -> str:
    """`transformers` or `vllm` for this serve.json here; raises UnsupportedModel when the transformers engine is
    the one left and this image lacks what it needs."""
    engine, reason = config.engine, None
    if engine == ENGINE_AUTO:
        reason = vllm_refusal(config, architectures, host)
        engine = ENGINE_VLLM if reason is None else ENGINE_TRANSFORMERS
    if engine == ENGINE_TRANSFORMERS:
        missing = transformers_missing(config, host)
        if missing:
            why = f"engine auto fell back to transformers ({reason}), but" if reason else "engine transformers:"
            raise UnsupportedModel(
                f"{why} this image lacks {', '.join(missing)}, which the transformers engine needs"
                + (" for quantization" if config.quantization is not None else "")
                + "; use the default kubetune server image, or install them in this one"
            )
    if reason is not None:
        log.info("engine auto: transformers (%s)", reason)
    elif config.engine == ENGINE_AUTO:
        log.info("engine auto: vLLM")
    return engine


def base_architectures(config: ServeConfig, pvc_root: str | None) -> list[str] | None:
    """The base model's config.json `architectures` where the folder is already here (a claim or the cache)."""
    config_file = Path(locate_base_model(config.base_model, pvc_root).load_from) / "config.json"
    if not config_file.is_file():
        return None
    return list(json.loads(config_file.read_text()).get("architectures") or [])


def make_engine(config: ServeConfig, pvc_root: str | None = None, device: str | None = None):
    """The engine serve.json asks for, as `choose_engine` decides it for this host."""
    auto = config.engine == ENGINE_AUTO
    host = Host.probe(with_vllm=auto)
    engine = choose_engine(config, base_architectures(config, pvc_root) if auto else None, host)
    if engine == ENGINE_VLLM:
        from .vllm_engine import VllmEngine

        return VllmEngine(config, pvc_root=pvc_root, device=device)
    from .engine import Engine

    return Engine(config, pvc_root=pvc_root, device=device)
