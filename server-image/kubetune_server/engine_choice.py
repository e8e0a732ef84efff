"""Which engine serves: serve.json's `engine` (`transformers`, `vllm`, or `auto`: vLLM where CUDA, the image and
the architecture allow, else transformers, with the reason logged)."""

from __future__ import annotations

import logging

from kubetune.api import ServeConfig
from kubetune.api.engines import ENGINE_AUTO, ENGINE_VLLM

from .engine import Engine
from .loader import locate_base_model

log = logging.getLogger(__name__)


def make_engine(config: ServeConfig, pvc_root: str | None = None, device: str | None = None):
    """The engine serve.json asks for; `auto` falls back to transformers when vLLM cannot serve here."""
    if config.engine == ENGINE_VLLM:
        from .vllm_engine import VllmEngine

        return VllmEngine(config, pvc_root=pvc_root, device=device)
    if config.engine == ENGINE_AUTO:
        from .vllm_engine import vllm_supports

        reason = (
            "mergeAdapter is set"
            if config.merge_adapter
            else vllm_supports(locate_base_model(config.base_model, pvc_root))
        )
        if reason is None:
            from .vllm_engine import VllmEngine

            log.info("engine auto: vLLM")
            return VllmEngine(config, pvc_root=pvc_root, device=device)
        log.info("engine auto: transformers (%s)", reason)
    return Engine(config, pvc_root=pvc_root, device=device)
