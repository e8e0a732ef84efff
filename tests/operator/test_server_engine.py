"""Engine-dependent parts of the server pod: threads from the CPU limit, the vLLM image, shm and start-up budget."""

from __future__ import annotations

import pytest
from kubetune.api.engines import resolve_engine
from kubetune.api.modelserve import ModelServeSpec
from kubetune.operator.manifests import server_engine
from kubetune.operator.settings import OperatorSettings


@pytest.mark.parametrize(
    ("cpu", "threads"), [(None, None), ("500m", 1), ("1", 1), ("1500m", 1), ("2", 2), ("2.5", 2), ("16", 16)]
)
def test_threads_are_the_whole_cores_of_the_cpu_limit(cpu, threads):
    assert server_engine.threads_for_cpu(cpu) == threads


def spec(**fields) -> ModelServeSpec:
    return ModelServeSpec.model_validate({"baseModel": {"name": "org/base"}, **fields})


def test_auto_is_vllm_on_gpus_and_transformers_on_cpu():
    assert resolve_engine("auto", 1) == "vllm" and resolve_engine("auto", 0) == "transformers"
    assert resolve_engine("vllm", 0) == "vllm" and resolve_engine("transformers", 4) == "transformers"
    assert spec().engine == "transformers"  # existing ModelServes keep their engine


def test_vllm_pods_get_their_image_shm_and_startup_budget():
    settings = OperatorSettings()
    fast = spec(engine="vllm", resources={"gpus": 2}, vllm={"startupSeconds": 600})
    assert server_engine.server_image(fast, settings) == settings.server_vllm_image
    assert server_engine.shm_size(fast) == "4Gi"
    probe = server_engine.startup_probe(fast, lambda path, period, failures: (path, period, failures))
    assert probe == ("/health", 10, 60)
    env = {e["name"]: e["value"] for e in server_engine.engine_env(fast, settings)}
    assert env["VLLM_NO_USAGE_STATS"] == "1" and "OMP_NUM_THREADS" not in env  # no CPU limit: torch decides
    plain = spec(resources={"gpus": 0, "cpu": "4"})
    assert server_engine.server_image(plain, settings) == settings.server_image
    assert {e["name"]: e["value"] for e in server_engine.engine_env(plain, settings)}["OMP_NUM_THREADS"] == "4"
    assert server_engine.termination_grace_seconds() > server_engine.DRAIN_SECONDS + server_engine.PRESTOP_SLEEP_SECONDS
