"""The transformers engine under the loads that broke it: sliding-window models, long prompts next to running
streams (chunked prefill, checked by counting tokens per forward pass, not by timing), a failing decode step,
admission by KV-cache budget, and the BOS that training put before text prompts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from kubetune.api import ServeConfig
from kubetune_server.engine import Engine
from kubetune_server.sampling import SamplingParams
from kubetune_server.serving import Serving, leading_special_ids

from tests.support.tiny_model import build_tiny_model

GREEDY = dict(temperature=0.0)


def make_engine(root: Path, **generation) -> Engine:
    body = {
        "baseModel": {"pvc": {"claimName": "models", "path": "base"}},
        "generation": {"maxNewTokens": 16, "maxNewTokensLimit": 128, "maxPromptTokens": 512, **generation},
    }
    engine = Engine(ServeConfig.model_validate(body), pvc_root=str(root), device="cpu")
    engine.load()
    return engine


def record_forwards(engine: Engine) -> list[tuple[int, int]]:
    """(rows, columns) of every forward pass the engine makes from now on."""
    log: list[tuple[int, int]] = []
    forward = engine._forward

    def logged(row_keys, **inputs):
        log.append(tuple(inputs["input_ids"].shape))
        return forward(row_keys, **inputs)

    engine._forward = logged
    return log


async def collect(handle) -> tuple[str, str | None, str | None]:
    parts = []
    async for chunk in handle.chunks():
        parts.append(chunk.text)
        if chunk.finish_reason:
            return "".join(parts), chunk.finish_reason, chunk.error
    raise AssertionError("no final chunk")


def prompts(count: int, length: int, seed: int = 0) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(10, 400, (length + 3 * i,), generator=generator).tolist() for i in range(count)]


def reference(engine: Engine, ids: list[int], max_tokens: int) -> str:
    """What transformers' own generate() answers for `ids` alone (its own cache, sliding layers included)."""
    model = engine._adapters.model
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), max_new_tokens=max_tokens, do_sample=False, pad_token_id=0)
    new = out[0, len(ids) :].tolist()
    eos = engine._eos_ids
    if any(token in eos for token in new):
        new = new[: next(i for i, token in enumerate(new) if token in eos)]
    return engine.tokenizer.decode(new, skip_special_tokens=True)


@pytest.fixture(scope="module")
def llama_root(pvc_root) -> Path:
    return pvc_root


@pytest.mark.parametrize("architecture", ["mistral", "gemma3"])
def test_sliding_window_models_batch_and_answer_as_alone(tmp_path, architecture):
    """Requests join a running batch and leave it (merge + trim) on a model whose window (8) is shorter than the
    prompts; every answer equals transformers' generate() for that prompt alone."""
    build_tiny_model(tmp_path / "models" / "base", architecture=architecture)
    engine = make_engine(tmp_path, maxStepTokens=64)
    engine.start()
    jobs = [(ids, 6 + 4 * (i % 3)) for i, ids in enumerate(prompts(6, 20))]

    async def run():
        first = [engine.submit(ids, "base", SamplingParams(max_tokens=n, **GREEDY)) for ids, n in jobs[:3]]
        tasks = [asyncio.ensure_future(collect(h)) for h in first]
        while engine.stats.steps < 3:
            await asyncio.sleep(0.001)
        later = [engine.submit(ids, "base", SamplingParams(max_tokens=n, **GREEDY)) for ids, n in jobs[3:]]
        tasks += [asyncio.ensure_future(collect(h)) for h in later]
        return await asyncio.gather(*tasks)

    try:
        results = asyncio.run(run())
    finally:
        engine.stop(10)
    assert [error for _, _, error in results] == [None] * 6
    assert [text for text, _, _ in results] == [reference(engine, ids, n) for ids, n in jobs]


def test_a_long_prompt_is_prefilled_in_chunks_while_streams_go_on(llama_root):
    engine = make_engine(llama_root, maxStepTokens=32)
    log = record_forwards(engine)
    engine.start()
    short_ids, long_ids = prompts(1, 5, seed=1)[0], prompts(1, 200, seed=2)[0]

    async def run():
        short = engine.submit(short_ids, "base", SamplingParams(max_tokens=60, **GREEDY))
        short_task = asyncio.ensure_future(collect(short))
        while engine.stats.steps < 2:
            await asyncio.sleep(0.001)
        long = engine.submit(long_ids, "base", SamplingParams(max_tokens=8, **GREEDY))
        return await asyncio.gather(short_task, collect(long))

    try:
        (short_text, _, _), (long_text, _, error) = asyncio.run(run())
    finally:
        engine.stop(10)
    assert error is None
    chunks = [i for i, (rows, columns) in enumerate(log) if columns > 1]
    assert all(rows * columns <= 32 for rows, columns in log)  # no step over the budget
    assert len(chunks) >= 200 // 32  # the long prompt went in pieces
    decode_steps_meanwhile = [log[i] for i in range(chunks[1], chunks[-1]) if log[i][1] == 1]
    assert len(decode_steps_meanwhile) >= len(chunks) - 2  # the short stream advanced between every two chunks
    assert long_text == reference(engine, long_ids, 8)  # chunking changed nothing in the answer
    assert short_text == reference(engine, short_ids, 60)


def test_a_failed_decode_step_sheds_the_newest_row_only(llama_root):
    engine = make_engine(llama_root)
    forward = engine._forward

    def out_of_memory_at_three_rows(row_keys, **inputs):
        if tuple(inputs["input_ids"].shape) == (3, 1):
            raise torch.OutOfMemoryError("simulated: CUDA out of memory")
        return forward(row_keys, **inputs)

    engine._forward = out_of_memory_at_three_rows
    jobs = prompts(3, 6, seed=3)

    async def run():
        handles = [engine.submit(ids, "base", SamplingParams(max_tokens=10, **GREEDY)) for ids in jobs]
        engine.start()  # all three were queued: they join as one group, then decode together
        return await asyncio.gather(*(collect(h) for h in handles))

    try:
        results = asyncio.run(run())
    finally:
        engine.stop(10)
    (first, _, e1), (second, _, e2), (_, reason, e3) = results
    assert (e1, e2) == (None, None)
    assert reason == "error" and "OutOfMemoryError" in e3
    assert [first, second] == [reference(engine, ids, 10) for ids in jobs[:2]]  # the cache was rolled back intact
    assert engine.stats.running == 0


def test_admission_counts_kv_cache_tokens_not_only_rows(llama_root):
    engine = make_engine(llama_root, kvCacheTokens=48, maxBatchSize=16)
    log = record_forwards(engine)
    jobs = prompts(5, 8, seed=4)  # prompts of 8, 11, 14, 17, 20 tokens + 8 new: 16..28 KV tokens each

    async def run():
        handles = [engine.submit(ids, "base", SamplingParams(max_tokens=8, **GREEDY)) for ids in jobs]
        engine.start()
        return await asyncio.gather(*(collect(h) for h in handles))

    try:
        results = asyncio.run(run())
    finally:
        engine.stop(10)
    assert [error for _, _, error in results] == [None] * 5
    assert max(rows for rows, _ in log) <= 2  # 3 rows would need 3 x 22+ > 48 tokens of cache
    assert [text for text, _, _ in results] == [reference(engine, ids, 8) for ids in jobs]


def test_completion_prompts_get_the_bos_training_put_before_them(tmp_path):
    """A tokenizer that adds BOS (Llama, Mistral, Gemma) gets it before /v1/completions and /generate prompts,
    once; chat prompts keep what the template wrote."""
    from tokenizers import processors

    build_tiny_model(tmp_path / "base")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "base")
    bos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    tokenizer.bos_token = "<|endoftext|>"
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", bos)]
    )
    assert leading_special_ids(tokenizer) == [bos]
    serving = Serving(SimpleNamespace(tokenizer=tokenizer))
    bare = tokenizer("The quick", add_special_tokens=False)["input_ids"]

    async def encode():
        return (
            await serving._prompt_ids("The quick"),
            await serving._prompt_ids("<|endoftext|>The quick"),
            await serving._prompt_ids(bare),
            await serving._encode("The quick"),
        )

    text, already, ids, chat = asyncio.run(encode())
    assert text == [[bos, *bare]]
    assert already == [[bos, *bare]]  # never twice
    assert ids == [bare]  # token ids are sent as given
    assert chat == bare


def test_a_model_whose_cache_cannot_be_batched_is_refused_at_load(tmp_path):
    """transformers' own sliding-window cache layers cannot be merged row by row: an engine meeting one says so at
    load, naming the alternative, instead of failing requests later."""
    from kubetune_server.errors import UnsupportedModel
    from transformers import DynamicCache

    build_tiny_model(tmp_path / "models" / "base", architecture="mistral")

    class SlidingCacheEngine(Engine):
        def _new_cache(self):
            return DynamicCache(config=self._adapters.model.config)

    body = {"baseModel": {"pvc": {"claimName": "models", "path": "base"}}}
    engine = SlidingCacheEngine(ServeConfig.model_validate(body), pvc_root=str(tmp_path), device="cpu")
    with pytest.raises(UnsupportedModel, match=r"MistralForCausalLM cannot be served .*engine: vllm"):
        engine.load()
    assert not engine.ready
