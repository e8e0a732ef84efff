"""vLLM's CPU platform with one answer changed: its LoRA punica wrapper is the grouped one (`vllm_cpu_lora.py` says
why). Activated by kubetune's vLLM platform plugin (`vllm_plugins.py`).

It names the wrapper by its import path, as vLLM's platforms do: the wrapper's module imports vLLM's LoRA code,
which needs the platform that is being chosen while this module is imported.
"""

from __future__ import annotations

from vllm.platforms.cpu import CpuPlatform

GROUPED_LORA_WRAPPER = "kubetune_server.vllm_cpu_lora.GroupedPunicaWrapperCPU"


class CpuPlatformWithGroupedLora(CpuPlatform):
    """vLLM's CPU platform with the grouped LoRA wrapper; everything else is vLLM's."""

    @classmethod
    def get_punica_wrapper(cls) -> str:
        return GROUPED_LORA_WRAPPER
