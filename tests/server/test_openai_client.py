"""The official openai client against a real server: models, completions, chat, streaming, adapters vs base."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.server.lora_factory import PROMPT
from tests.support.tiny_model import synthetic_facts

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    url, _ = server
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


def ask(client, model: str, question: str, **kwargs) -> str:
    result = client.completions.create(
        model=model, prompt=PROMPT.format(question=question), max_tokens=8, temperature=0, **kwargs
    )
    return result.choices[0].text


def test_models_lists_base_and_adapters_with_parent(client):
    models = {model.id: model for model in client.models.list().data}
    assert set(models) == {"base", "facts-a", "facts-b"}
    assert models["facts-a"].parent == "base"
    assert getattr(models["base"], "parent", None) is None
    assert client.models.retrieve("facts-b").id == "facts-b"


def test_each_adapter_answers_its_own_facts_and_the_base_does_not(client):
    facts_a, facts_b = synthetic_facts(0), synthetic_facts(1)
    a_right = sum(ask(client, "facts-a", f.question).strip() == f.answer for f in facts_a)
    b_right = sum(ask(client, "facts-b", f.question).strip() == f.answer for f in facts_b)
    base_right = sum(ask(client, "base", f.question).strip() == f.answer for f in facts_a)
    assert a_right >= 15
    assert b_right >= 15
    assert base_right == 0
    differing = sum(ask(client, "facts-a", f.question) != ask(client, "facts-b", f.question) for f in facts_a[:8])
    assert differing >= 6


def test_completion_reports_usage_and_finish_reason(client):
    fact = synthetic_facts(0)[3]
    result = client.completions.create(model="facts-a", prompt=PROMPT.format(question=fact.question), temperature=0)
    choice = result.choices[0]
    assert choice.finish_reason == "stop"
    assert result.usage.prompt_tokens > 5
    assert result.usage.completion_tokens >= 2  # the answer and eos
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    cut = client.completions.create(model="base", prompt="The quick brown", max_tokens=3, temperature=0)
    assert cut.choices[0].finish_reason == "length"
    assert cut.usage.completion_tokens == 3


def test_stop_string_cuts_the_text(client):
    full = client.completions.create(model="base", prompt="The quick brown", max_tokens=12, temperature=0)
    text = full.choices[0].text
    stop = text[3:5]
    assert len(stop) == 2
    stopped = client.completions.create(
        model="base", prompt="The quick brown", max_tokens=12, temperature=0, stop=[stop]
    )
    assert stopped.choices[0].text == text[: text.index(stop)]
    assert stopped.choices[0].finish_reason == "stop"


def test_completion_with_several_prompts_and_n(client):
    facts = synthetic_facts(0)[:2]
    result = client.completions.create(
        model="facts-a", prompt=[PROMPT.format(question=f.question) for f in facts], max_tokens=4, temperature=0, n=2
    )
    assert [c.index for c in result.choices] == [0, 1, 2, 3]
    assert [c.text.strip() for c in result.choices] == [facts[0].answer] * 2 + [facts[1].answer] * 2


def test_seeded_sampling_repeats(client):
    texts = {
        client.completions.create(model="base", prompt="The quick", max_tokens=10, temperature=1.0, top_p=0.9, seed=7)
        .choices[0]
        .text
        for _ in range(3)
    }
    assert len(texts) == 1


def test_n_choices_with_a_seed_each_draw_from_seed_plus_index(client):
    def sample(seed: int, n: int) -> list[str]:
        result = client.completions.create(
            model="base", prompt="The quick", max_tokens=12, temperature=1.5, seed=seed, n=n
        )
        return [choice.text for choice in sorted(result.choices, key=lambda c: c.index)]

    choices = sample(7, 3)
    assert len(set(choices)) == 3  # not n copies of one draw
    assert choices == [sample(7 + index, 1)[0] for index in range(3)]  # choice i repeats as seed + i alone
    assert sample(7, 3) == choices


def test_chat_completion_uses_the_chat_template(client):
    result = client.chat.completions.create(
        model="facts-a",
        messages=[{"role": "user", "content": "Where does the amber fox live?"}],
        max_tokens=5,
        temperature=0,
    )
    assert result.choices[0].message.role == "assistant"
    assert isinstance(result.choices[0].message.content, str)
    assert result.usage.prompt_tokens > 5
    assert result.usage.completion_tokens <= 5


def test_streaming_chat_matches_the_non_streamed_answer(client):
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Where does the jade moth live?"},
    ]
    whole = client.chat.completions.create(model="base", messages=messages, max_tokens=10, temperature=0)
    stream = client.chat.completions.create(
        model="base",
        messages=messages,
        max_tokens=10,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text == whole.choices[0].message.content
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 2  # arrived token by token


def test_stream_ends_with_done(server):
    url, _ = server
    body = {"model": "base", "prompt": "The quick", "max_tokens": 4, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert len(events) >= 3


def test_tutorial_generate_endpoint(server):
    url, _ = server
    fact = synthetic_facts(0)[5]
    response = httpx.post(
        f"{url}/generate", json={"question": fact.question, "max_tokens": 8, "temperature": 0, "model": "facts-a"}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["answer"] == fact.answer
    assert body["tokens_used"] > 10  # prompt + answer, as the tutorial counted


def test_unknown_model_is_a_404_naming_the_models(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.completions.create(model="nope", prompt="hi", max_tokens=2)
    message = caught.value.body["message"]
    assert "nope" in message and "facts-a" in message and "base" in message


def test_metrics_count_requests_and_tokens(server, client):
    url, _ = server
    ask(client, "base", "Where does the amber fox live?")
    text = httpx.get(f"{url}/metrics").text
    assert 'kubetune_requests_total{route="/v1/completions",status="200"}' in text
    assert 'kubetune_completion_tokens_total{model="base"}' in text
    assert "kubetune_batch_size_bucket" in text
    assert "kubetune_queue_depth" in text


def test_running_sequences_is_zero_when_idle(server, client):
    """An autoscaler reading kubetune_running_sequences must see 0 once the last request has finished."""
    url, app = server
    ask(client, "facts-a", "Where does the amber fox live?")
    engine = app.state.serving.engine
    assert engine.stats.running == 0 and engine.stats.waiting == 0
    text = httpx.get(f"{url}/metrics").text
    assert "kubetune_running_sequences 0.0" in text
    assert "kubetune_queue_depth 0.0" in text
