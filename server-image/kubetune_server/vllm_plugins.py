"""kubetune's vLLM plugin (entry point `vllm.platform_plugins` in pyproject.toml): on a CPU, vLLM's CPU platform
with LoRA grouped by adapter (`vllm_cpu_platform.py`; `vllm_cpu_lora.py` says why).

vLLM calls `cpu_lora_platform()` in each of its processes while it picks a platform; it activates exactly where
vLLM would choose its stock `CpuPlatform` (never on GPUs, nor where vLLM picks another CPU platform such as
ZenCpuPlatform). vLLM's own `VLLM_PLUGINS` (the plugins to load; an empty value loads none) turns it off, and
`VLLM_TARGET_DEVICE=cpu` makes vLLM skip platform plugins altogether. This module imports nothing of vLLM until
vLLM calls it, so it cannot disturb vLLM's platform detection.
"""

from __future__ import annotations

STOCK_CPU_PLATFORM = "vllm.platforms.cpu.CpuPlatform"
GROUPED_LORA_CPU_PLATFORM = "kubetune_server.vllm_cpu_platform.CpuPlatformWithGroupedLora"


def cpu_lora_platform() -> str | None:
    """The grouped-LoRA CPU platform where vLLM would take its stock CPU platform, else None (not active)."""
    from vllm.platforms import cpu_platform_plugin

    return GROUPED_LORA_CPU_PLATFORM if cpu_platform_plugin() == STOCK_CPU_PLATFORM else None
