"""What the server pod needs beyond the container itself, per engine: threads, drain and shutdown timing, and
the vLLM engine's image, shared memory, start-up budget and settings.

Kept apart from server.py so the engine-specific choices sit in one place with their reasons.
"""

from __future__ import annotations

import math
import re
from typing import Any

from kubetune.api import runtime
from kubetune.api.engines import ENGINE_VLLM, resolve_engine
from kubetune.api.modelserve import ModelServeSpec

from ..settings import OperatorSettings
from . import pod

PRESTOP_SLEEP_SECONDS = 5
"""Time for Service endpoints and load balancers to drop the pod before it stops taking requests."""

DRAIN_SECONDS = 30
"""How long the server lets running requests finish after SIGTERM (its KUBETUNE_DRAIN_SECONDS)."""

SHUTDOWN_MARGIN_SECONDS = 15
"""Left after the drain for the engine and the process to exit before the kubelet's SIGKILL."""

_CPU = re.compile(r"^([0-9]*\.?[0-9]+)(m?)$")


def threads_for_cpu(cpu: str | None) -> int | None:
    """OMP/MKL threads for a CPU limit: its whole cores, at least 1. Without a limit torch takes every core of the
    node, and with a limit below that the threads fight over the quota (7x slower measured on a 2-CPU pod)."""
    if not cpu:
        return None
    match = _CPU.match(str(cpu))
    if match is None:  # an exponent form ('1e3m') or similar: leave torch's choice
        return None
    cores = float(match.group(1)) / (1000 if match.group(2) else 1)
    return max(1, math.floor(cores))


def engine_of(spec: ModelServeSpec) -> str:
    return resolve_engine(spec.engine, spec.resources.gpus)


def server_image(spec: ModelServeSpec, settings: OperatorSettings) -> str:
    if spec.image:
        return spec.image
    return settings.server_vllm_image if engine_of(spec) == ENGINE_VLLM else settings.server_image


def engine_env(spec: ModelServeSpec, settings: OperatorSettings) -> list[dict[str, Any]]:
    env = [pod.env_value(runtime.ENV_DRAIN_SECONDS, str(DRAIN_SECONDS))]
    threads = threads_for_cpu(spec.resources.cpu or settings.server_cpu)
    if threads is not None:
        env += [pod.env_value("OMP_NUM_THREADS", str(threads)), pod.env_value("MKL_NUM_THREADS", str(threads))]
    if engine_of(spec) == ENGINE_VLLM:
        # vLLM's usage reporting would try to reach the internet from the pod.
        env += [pod.env_value("VLLM_NO_USAGE_STATS", "1"), pod.env_value("DO_NOT_TRACK", "1")]
    return env


def shm_size(spec: ModelServeSpec) -> str:
    """vLLM's workers exchange tensors through /dev/shm (NCCL with several GPUs): more than the 1Gi default."""
    if engine_of(spec) == ENGINE_VLLM:
        return f"{2 * max(1, spec.resources.gpus)}Gi"
    return "1Gi"


def startup_probe(spec: ModelServeSpec, probe) -> dict[str, Any]:
    """Loading (and for vLLM memory profiling and CUDA-graph capture) may take minutes: liveness waits for it."""
    if engine_of(spec) == ENGINE_VLLM:
        period = 10
        return probe("/health", period, max(1, spec.vllm.startup_seconds // period))
    return probe("/health", 5, 120)


def lifecycle() -> dict[str, Any]:
    """preStop sleeps (the kubelet's own sleep action: no shell needed in the image) while endpoints drop the
    pod; then SIGTERM starts the drain."""
    return {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}}


def termination_grace_seconds() -> int:
    """preStop + drain + exit margin: the default 30 s would SIGKILL a pod mid-drain."""
    return PRESTOP_SLEEP_SECONDS + DRAIN_SECONDS + SHUTDOWN_MARGIN_SECONDS
