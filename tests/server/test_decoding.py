"""Decoding controls (top_k, repetition_penalty, frequency_penalty, presence_penalty) on the transformers engine.

The logits transforms are checked against hand computations and against Hugging Face's own processors on the same
logits; then, through the real openai client and the engine, that they reach the sampler per row (a batch mixes
them), that greedy decoding is penalised too, and that `spec.generation` supplies defaults a request overrides.
"""

from __future__ import annotations

import asyncio

import openai
import pytest
import torch
from kubetune.api import ServeConfig
from kubetune_server.engine import Engine
from kubetune_server.sampling import (
    SamplingParams,
    TokenHistory,
    apply_penalties,
    choose_next_tokens,
    make_generator,
    penalised_logits,
    sampling_probabilities,
)

from tests.server.conftest import live_server, serve_config, write_serve_config

PROMPT = "The quick brown"
LONG = 60  # enough greedy tokens for the tiny random model to repeat itself


def _history(prompt: list[int], generated: list[int]) -> TokenHistory:
    history = TokenHistory(prompt)
    for token in generated:
        history.add(token)
    return history


def test_penalties_match_a_hand_computation():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0, -0.25]])
    # token 0 is in the prompt only, token 1 was generated once, token 3 twice; 2 and 4 never occurred
    seen, counts = _history([0], [1, 3, 3]).tensors(5, torch.device("cpu"))
    out = apply_penalties(
        logits, seen[None], counts[None], torch.tensor([2.0]), torch.tensor([0.5]), torch.tensor([1.0])
    )
    # repetition 2: 2/2, -1*2, -, 3/2, -; then frequency 0.5 x count and presence 1 on generated tokens only
    assert out.tolist() == [[1.0, -1.0 * 2 - 0.5 - 1.0, 0.5, 3.0 / 2 - 0.5 * 2 - 1.0, -0.25]]


def test_repetition_penalty_equals_hugging_face_on_prompt_and_generated_tokens():
    from transformers import RepetitionPenaltyLogitsProcessor

    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 64, generator=generator) * 4
    prompts = [[1, 5, 5, 9], [2, 3], [60, 61, 62, 63, 0]]
    generated = [[7, 7, 1], [40], [0, 0, 12, 33]]
    penalties = [1.3, 0.7, 2.0]
    params = [SamplingParams(max_tokens=4, repetition_penalty=p) for p in penalties]
    histories = [_history(p, g) for p, g in zip(prompts, generated, strict=True)]
    ours = penalised_logits(logits, params, histories)
    for row, penalty in enumerate(penalties):
        input_ids = torch.tensor([prompts[row] + generated[row]])
        reference = RepetitionPenaltyLogitsProcessor(penalty=penalty)(input_ids, logits[row : row + 1].clone())
        assert torch.equal(ours[row], reference[0])
    assert not torch.equal(ours, logits)


def test_frequency_and_presence_count_generated_tokens_only():
    logits = torch.zeros(1, 8)
    params = [SamplingParams(max_tokens=4, frequency_penalty=0.5, presence_penalty=0.25)]
    out = penalised_logits(logits, params, [_history([1, 1, 2], [2, 2, 2, 5])])
    expected = torch.zeros(8)
    expected[2] = -(0.5 * 3 + 0.25)  # three times in the answer; its prompt occurrence does not count
    expected[5] = -(0.5 + 0.25)
    assert torch.equal(out[0], expected)  # token 1 (prompt only) untouched


def test_top_k_equals_hugging_face_top_k_warper_including_ties():
    from transformers import TopKLogitsWarper

    logits = torch.randn(4, 32, generator=torch.Generator().manual_seed(5))
    logits[1, :6] = 9.0  # a six-way tie at the top: k=2 keeps all six, as Hugging Face does
    top_ks = [3, 2, 1, 32]
    temperatures = torch.tensor([1.0, 0.5, 1.3, 0.8])
    ours = sampling_probabilities(logits, temperatures, torch.ones(4), torch.tensor(top_ks))
    for row, k in enumerate(top_ks):
        scaled = logits[row : row + 1] / temperatures[row]
        reference = torch.softmax(TopKLogitsWarper(top_k=k)(None, scaled), dim=-1)[0]
        assert torch.allclose(ours[row], reference, atol=1e-7)
    assert int((ours[1] > 0).sum()) == 6
    off = sampling_probabilities(logits, temperatures, torch.ones(4), torch.zeros(4, dtype=torch.long))
    assert torch.allclose(off, torch.softmax(logits / temperatures[:, None], dim=-1))


def test_top_k_applies_before_top_p():
    logits = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1]]))
    # top_k 3 renormalises to 0.44/0.33/0.22; top_p 0.7 then needs the first two (0.44 < 0.7 <= 0.78)
    probabilities = sampling_probabilities(logits, torch.ones(1), torch.tensor([0.7]), torch.tensor([3]))
    assert (probabilities[0] > 0).tolist() == [True, True, False, False]


def test_the_most_extreme_allowed_values_keep_probabilities_finite():
    """The fuzzer found repetition_penalty 1e300 turning logits into inf and NaN; the allowed extremes do not."""
    logits = torch.randn(4, 64, generator=torch.Generator().manual_seed(2)) * 30
    seen_everything = _history(list(range(64)), [3] * 32768)
    params = [
        SamplingParams(max_tokens=4, temperature=2.0, repetition_penalty=0.01, frequency_penalty=-2, top_k=5),
        SamplingParams(max_tokens=4, temperature=1e-5, repetition_penalty=100.0, presence_penalty=2, top_p=0.1),
        SamplingParams(max_tokens=4, temperature=0.5, repetition_penalty=100.0, frequency_penalty=2),
        SamplingParams(max_tokens=4, temperature=1.0, repetition_penalty=0.01, presence_penalty=-2),
    ]
    histories = [seen_everything, _history([1], [1, 2]), _history([], [5] * 100), _history([7], [])]
    penalised = penalised_logits(logits, params, histories)
    assert bool(torch.isfinite(penalised).all())
    probabilities = sampling_probabilities(
        penalised,
        torch.tensor([p.temperature for p in params]),
        torch.tensor([p.top_p for p in params]),
        torch.tensor([p.top_k for p in params]),
    )
    assert bool(torch.isfinite(probabilities).all()) and torch.allclose(probabilities.sum(-1), torch.ones(4))
    assert len(choose_next_tokens(logits, params, [None] * 4, histories)) == 4


def test_a_vanishing_top_p_keeps_the_most_likely_token():
    """The fuzzer sent top_p 1e-300, which is 0 in float32: every token was dropped and sampling failed on NaN."""
    logits = torch.tensor([[0.5, 2.0, -1.0]])
    probabilities = sampling_probabilities(logits, torch.ones(1), torch.tensor([1e-300]), torch.tensor([2]))
    assert probabilities.tolist() == [[0.0, 1.0, 0.0]]


def test_penalties_change_greedy_choices():
    logits = torch.tensor([[3.0, 2.9, 0.0]])
    params = [SamplingParams(max_tokens=4, presence_penalty=0.5)]
    assert choose_next_tokens(logits, [SamplingParams(max_tokens=4)], [None]) == [0]
    assert choose_next_tokens(logits, params, [None], [_history([], [0])]) == [1]
    repetition = [SamplingParams(max_tokens=4, repetition_penalty=1.2)]
    assert choose_next_tokens(logits, repetition, [None], [_history([0], [])]) == [1]  # prompt tokens count here
    with pytest.raises(ValueError, match="TokenHistory"):
        choose_next_tokens(logits, params, [None])


def test_each_row_of_a_mixed_batch_gets_what_it_gets_alone():
    generator = torch.Generator().manual_seed(11)
    logits = torch.randn(5, 40, generator=generator) * 3
    params = [
        SamplingParams(max_tokens=4),
        SamplingParams(max_tokens=4, repetition_penalty=1.8, frequency_penalty=1.0),
        SamplingParams(max_tokens=4, temperature=1.0, seed=3, top_k=2),
        SamplingParams(max_tokens=4, temperature=0.8, seed=4, top_k=5, top_p=0.6, presence_penalty=-1.5),
        SamplingParams(max_tokens=4, temperature=1.0, seed=5),
    ]
    prompts = [[1, 2], [3, 3, 4], [5], [6, 7], [8]]
    generated = [[9], [int(logits[1].argmax()), 10], [11], [int(logits[3].argmax())], []]

    def histories():
        return [_history(p, g) if q.penalised else None for p, g, q in zip(prompts, generated, params, strict=True)]

    together = choose_next_tokens(logits, params, [make_generator(p) for p in params], histories())
    alone = [
        choose_next_tokens(logits[row : row + 1], [params[row]], [make_generator(params[row])], [histories()[row]])[0]
        for row in range(len(params))
    ]
    assert together == alone
    assert together[1] != int(logits[1].argmax())  # the penalty moved this greedy row off its argmax


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("presence_penalty", 2.5, "must be between -2 and 2 (OpenAI's range), got 2.5"),
        ("frequency_penalty", float("nan"), "must be between -2 and 2"),
        ("repetition_penalty", 0, "must be between 0.01 and 100 (1 is off), got 0"),
        ("repetition_penalty", 1e300, "must be between 0.01 and 100"),  # would overflow the logits to inf
        ("repetition_penalty", float("inf"), "must be between 0.01 and 100"),
        ("top_k", -2, "must be between -1 and 1048576 (0 or -1 is off), got -2"),
    ],
)
def test_out_of_range_values_are_refused_naming_the_field_and_its_range(field, value, message):
    from kubetune_server.protocol import ChatCompletionRequest, CompletionRequest, GenerateRequest
    from pydantic import ValidationError

    bodies = {
        CompletionRequest: {"model": "base", "prompt": "hi"},
        ChatCompletionRequest: {"model": "base", "messages": [{"role": "user", "content": "hi"}]},
        GenerateRequest: {"question": "hi"},
    }
    for model, body in bodies.items():
        with pytest.raises(ValidationError) as refused:
            model.model_validate({**body, field: value})
        (error,) = refused.value.errors()
        assert error["loc"] == (field,) and error["msg"].startswith(message)
    edge = {"presence_penalty": -2, "frequency_penalty": 2, "repetition_penalty": 0.01, "top_k": -1}
    assert CompletionRequest.model_validate({**bodies[CompletionRequest], **edge}).top_k == -1


# ----- through the engine and the real openai client (tiny model) -----


def _repeats(tokens: list[int]) -> int:
    return len(tokens) - len(set(tokens))


def _recorded_tokens(engine, monkeypatch) -> dict[object, list[int]]:
    """The token ids the engine chooses, one list per sequence (the text a client gets hides byte-level tokens
    that are not whole characters, so repeats are counted on the engine's own choices)."""
    sequences: dict[object, list[int]] = {}  # keyed by the handle itself: ids of freed handles get reused
    advance = engine._advance

    def recording(row, token):
        sequences.setdefault(row.handle, []).append(token)
        return advance(row, token)

    monkeypatch.setattr(engine, "_advance", recording)
    return sequences


@pytest.fixture(scope="module")
def defaults_server(pvc_root, tmp_path_factory):
    """A server whose spec.generation sets every decoding control (greedy by default, to compare exactly)."""
    generation = {"temperature": 0, "repetitionPenalty": 1.5, "frequencyPenalty": 0.5, "presencePenalty": 0.5}
    body = serve_config({}, generation={**generation, "topK": 1})
    config_path = write_serve_config(tmp_path_factory.mktemp("cfg") / "serve.json", body)
    with live_server(config_path, pvc_root) as (url, app):
        yield url, app


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


def _complete(client, **kwargs) -> str:
    body = {"model": "base", "prompt": PROMPT, "max_tokens": LONG, "temperature": 0, **kwargs}
    return client.completions.create(**body).choices[0].text


@pytest.mark.slow
def test_strong_penalties_repeat_fewer_tokens_than_plain_greedy(server, monkeypatch):
    url, app = server
    client = _client(url)
    sequences = _recorded_tokens(app.state.serving.engine, monkeypatch)

    def tokens_of(**kwargs) -> list[int]:
        before = set(sequences)
        _complete(client, **kwargs)
        (new,) = set(sequences) - before
        return sequences[new]

    plain = tokens_of()
    assert len(plain) == LONG and _repeats(plain) >= 10  # the random tiny model repeats itself when greedy
    penalised = {
        "repetition": tokens_of(extra_body={"repetition_penalty": 2.0}),
        "frequency": tokens_of(frequency_penalty=2.0),
        "presence": tokens_of(presence_penalty=2.0),
    }
    for name, tokens in penalised.items():
        assert _repeats(tokens) <= _repeats(plain) // 4, (name, tokens, plain)
    assert tokens_of() == plain  # deterministic: the same request without penalties repeats as before
    chat = {"model": "base", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": LONG, "temperature": 0}
    before = set(sequences)
    client.chat.completions.create(**chat)
    client.chat.completions.create(**chat, extra_body={"repetition_penalty": 2.0})
    plain_chat, penalised_chat = (sequences[key] for key in sequences if key not in before)
    assert _repeats(penalised_chat) < _repeats(plain_chat)


@pytest.mark.slow
def test_greedy_repetition_penalty_equals_hugging_face_generate(server, pvc_root):
    from transformers import AutoModelForCausalLM

    url, app = server
    tokenizer = app.state.serving.engine.tokenizer
    served = _complete(_client(url), extra_body={"repetition_penalty": 1.3})
    model = AutoModelForCausalLM.from_pretrained(pvc_root / "models" / "base", dtype=torch.float32)
    ids = torch.tensor([tokenizer(PROMPT, add_special_tokens=False)["input_ids"]])
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=LONG, do_sample=False, repetition_penalty=1.3)
    assert served == tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


@pytest.mark.slow
def test_top_k_one_at_temperature_one_is_greedy(server):
    url, _ = server
    client = _client(url)
    greedy = _complete(client)
    for seed in (1, 2, 3):
        assert _complete(client, temperature=1.0, seed=seed, extra_body={"top_k": 1}) == greedy
    assert _complete(client, temperature=1.0, seed=1, extra_body={"top_k": -1}) != greedy  # -1 is off


@pytest.mark.slow
def test_generate_takes_the_decoding_controls(server):
    import httpx

    url, _ = server
    question = {"question": "Where does the amber fox live?", "max_tokens": LONG, "temperature": 0}
    plain = httpx.post(f"{url}/generate", json=question, timeout=60).json()["answer"]
    penalised = httpx.post(f"{url}/generate", json={**question, "repetition_penalty": 2.0}, timeout=60)
    assert penalised.status_code == 200 and penalised.json()["answer"] != plain
    sampled = {**question, "temperature": 1.0, "top_k": 1, "top_p": 0.5}
    assert httpx.post(f"{url}/generate", json=sampled, timeout=60).json()["answer"] == plain


@pytest.mark.slow
def test_spec_generation_defaults_apply_and_a_request_overrides_them(server, defaults_server):
    plain_client, defaults_client = _client(server[0]), _client(defaults_server[0])
    penalties = {"frequency_penalty": 0.5, "presence_penalty": 0.5, "extra_body": {"repetition_penalty": 1.5}}
    expected = _complete(plain_client, **penalties)
    assert expected != _complete(plain_client)
    # no fields and no temperature: every default of spec.generation applies (temperature 0, the three penalties)
    result = defaults_client.completions.create(model="base", prompt=PROMPT, max_tokens=LONG)
    assert result.choices[0].text == expected
    # a request's values win: penalties off again gives the plain greedy text
    off = {"frequency_penalty": 0, "presence_penalty": 0, "extra_body": {"repetition_penalty": 1}}
    assert _complete(defaults_client, **off) == _complete(plain_client)
    # topK 1 from the spec makes a sampled request greedy (penalised, as the spec says)
    assert _complete(defaults_client, temperature=1.5, seed=9) == expected


def _engine_texts(pvc_root, jobs: list[tuple[str, SamplingParams]]) -> list[str]:
    """Run `jobs` (prompt, params) on the base model, all admitted together: they are queued before the worker
    starts, so they prefill as one group and decode in one batch."""
    config = ServeConfig.model_validate(serve_config({}))
    engine = Engine(config, pvc_root=str(pvc_root), device="cpu")
    engine.load()
    rows: list[int] = []
    engine.on_step = rows.append

    async def run():
        handles = [
            engine.submit(engine.tokenizer(prompt, add_special_tokens=False)["input_ids"], "base", params)
            for prompt, params in jobs
        ]
        engine.start()

        async def text(handle):
            return "".join([chunk.text async for chunk in handle.chunks()])

        return await asyncio.gather(*(text(h) for h in handles))

    try:
        texts = asyncio.run(run())
    finally:
        engine.stop(10)
    assert max(rows) == len(jobs)  # they really shared a batch
    return texts


@pytest.mark.slow
def test_a_penalised_and_a_plain_row_in_one_batch_each_get_their_own_answer(pvc_root):
    jobs = [
        (PROMPT, SamplingParams(max_tokens=24)),
        (PROMPT, SamplingParams(max_tokens=24, repetition_penalty=1.6, presence_penalty=0.5)),
        ("question answer", SamplingParams(max_tokens=24, frequency_penalty=1.5)),
        ("question answer", SamplingParams(max_tokens=24, temperature=1.0, seed=4, top_k=3)),
    ]
    together = _engine_texts(pvc_root, jobs)
    alone = [_engine_texts(pvc_root, [job])[0] for job in jobs]
    assert together == alone
    assert together[0] != together[1]  # the penalty changed the penalised row only
