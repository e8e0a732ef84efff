"""What hardware the trainer runs on, which precision that implies, and how many CPU threads to use."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import InvalidInputError

log = logging.getLogger(__name__)

ResolvedPrecision = Literal["bf16", "fp16", "fp32"]


@dataclass(frozen=True)
class DeviceInfo:
    """The facts precision and quantization choices depend on."""

    kind: Literal["cuda", "cpu"]
    bf16_supported: bool = False
    name: str = "cpu"

    @property
    def is_cuda(self) -> bool:
        return self.kind == "cuda"


def detect_device() -> DeviceInfo:
    """CUDA when a GPU is visible, else CPU."""
    import torch

    if torch.cuda.is_available():
        return DeviceInfo(kind="cuda", bf16_supported=torch.cuda.is_bf16_supported(), name=torch.cuda.get_device_name())
    return DeviceInfo(kind="cpu")


def resolve_precision(requested: str, device: DeviceInfo) -> ResolvedPrecision:
    """`auto` -> bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU; explicit choices are checked."""
    if requested == "auto":
        if not device.is_cuda:
            return "fp32"
        return "bf16" if device.bf16_supported else "fp16"
    if requested == "fp16" and not device.is_cuda:
        raise InvalidInputError("training.precision: 'fp16' needs a CUDA GPU; use 'auto', 'fp32' or 'bf16' on CPU")
    if requested == "bf16" and device.is_cuda and not device.bf16_supported:
        raise InvalidInputError(
            f"training.precision: 'bf16' is not supported by {device.name}; use 'auto' or 'fp16' on this GPU"
        )
    return requested  # type: ignore[return-value]


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Whole CPUs allowed by the container's cgroup (v2 `cpu.max` or v1 quota), or None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return max(1, int(int(quota) / int(period)))
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_v1 = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_v1 = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return max(1, quota_v1 // period_v1) if quota_v1 > 0 else None
    except (OSError, ValueError):
        return None


def cpu_thread_count(
    environ: dict[str, str] | None = None, cgroup_root: Path = Path("/sys/fs/cgroup"), processes: int = 1
) -> int:
    """Threads per process on CPU: OMP_NUM_THREADS when set, else min(affinity CPUs, cgroup limit) / processes."""
    environ = os.environ if environ is None else environ
    configured = environ.get("OMP_NUM_THREADS", "").strip()
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = cgroup_cpu_limit(cgroup_root)
    usable = min(available, limit) if limit else available
    return max(1, usable // max(1, processes))


def configure_cpu_threads(processes: int = 1) -> int:
    """Set torch's intra-op threads for CPU training; oversubscribed threads made a test 16x slower here."""
    import torch

    threads = cpu_thread_count(processes=processes)
    torch.set_num_threads(threads)
    log.info("CPU training with %d threads per process", threads)
    return threads
