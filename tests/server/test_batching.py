"""Concurrent requests are batched (several adapters in one forward pass) without changing greedy answers."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

from tests.server.conftest import live_server, serve_config, write_serve_config
from tests.server.lora_factory import PROMPT
from tests.support.tiny_model import synthetic_facts

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def long_server(pvc_root, tmp_path_factory):
    body = serve_config({"facts-a": "facts-a", "facts-b": "facts-b"}, generation={"maxNewTokensLimit": 450})
    config_path = write_serve_config(tmp_path_factory.mktemp("cfg") / "serve.json", body)
    with live_server(config_path, pvc_root) as (url, app):
        yield url, app


def _jobs() -> list[tuple[str, str, int]]:
    """32 requests over the base and both adapters, with different prompt lengths and max_tokens."""
    facts = synthetic_facts(0)
    models = ["base", "facts-a", "facts-b"]
    return [
        (models[i % 3], PROMPT.format(question=facts[i % 16].question) + " " * (i % 4), 4 + i % 7) for i in range(32)
    ]


async def _complete(client: openai.AsyncOpenAI, model: str, prompt: str, max_tokens: int) -> tuple[str, str, int]:
    result = await client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0)
    return result.choices[0].text, result.choices[0].finish_reason, result.usage.completion_tokens


def test_32_concurrent_greedy_answers_equal_a_sequential_run(long_server):
    url, app = long_server
    engine = app.state.serving.engine

    async def run():
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=120)
        sequential = [await _complete(client, *job) for job in _jobs()]
        steps_before = engine.stats.steps
        sampled = [  # sampling rows in the same batches must not disturb the greedy ones
            client.completions.create(model="facts-a", prompt="The quick", max_tokens=8, temperature=1.2, top_p=0.8)
            for _ in range(4)
        ]
        results = await asyncio.gather(*(_complete(client, *job) for job in _jobs()), *sampled)
        await client.close()
        return sequential, results[:32], engine.stats.steps - steps_before

    sequential, concurrent, steps = asyncio.run(run())
    assert concurrent == sequential
    assert len({text for text, _, _ in sequential}) > 10  # the three models really answer differently
    total_tokens = sum(tokens for _, _, tokens in sequential)
    assert steps < total_tokens / 2  # far fewer forward passes than tokens: requests shared batches
    metrics = httpx.get(f"{url}/metrics").text
    assert 'kubetune_batch_size_bucket{le="1.0"}' in metrics


def _longest_seed(url: str) -> tuple[int, dict]:
    """A seed whose sampled continuation runs long, so there is time to act while it is generating."""
    for seed in range(20):
        body = {"model": "base", "prompt": "The", "max_tokens": 400, "temperature": 1.5, "seed": seed}
        result = httpx.post(f"{url}/v1/completions", json=body, timeout=60).json()
        if result["usage"]["completion_tokens"] >= 300:
            return seed, body
    raise AssertionError("no seed gave a long continuation")


def _wait_idle(engine, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while engine.stats.running or engine.stats.waiting:
        assert time.monotonic() < deadline, "the engine kept running"
        time.sleep(0.01)


def test_client_disconnect_cancels_a_stream(long_server):
    url, app = long_server
    engine = app.state.serving.engine
    _, body = _longest_seed(url)
    _wait_idle(engine)
    steps_before = engine.stats.steps
    with httpx.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}, timeout=60) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                break  # got the first token: hang up
    _wait_idle(engine)
    assert engine.stats.steps - steps_before < 250  # the full answer would take 300+ steps


def test_client_disconnect_cancels_a_plain_request(long_server):
    url, app = long_server
    engine = app.state.serving.engine
    _, body = _longest_seed(url)
    _wait_idle(engine)
    steps_before = engine.stats.steps
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/v1/completions", json=body, timeout=httpx.Timeout(60, read=0.05))
    _wait_idle(engine)
    assert engine.stats.steps - steps_before < 250
