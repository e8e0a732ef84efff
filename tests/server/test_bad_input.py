"""Malformed requests get the right 4xx in the one error envelope; fuzzing the OpenAPI schema finds no 5xx."""

from __future__ import annotations

import httpx
import pytest

from tests.server.conftest import live_server, serve_config, write_serve_config

pytestmark = pytest.mark.slow

KEY = "sk-test-123"
AUTH = {"Authorization": f"Bearer {KEY}"}
OK_COMPLETION = {"model": "base", "prompt": "The quick", "max_tokens": 2}
OK_CHAT = {"model": "base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.fixture(scope="module")
def guarded(pvc_root, tmp_path_factory):
    body = serve_config({"facts-a": "facts-a"}, generation={"maxNewTokens": 4, "maxNewTokensLimit": 8})
    config_path = write_serve_config(tmp_path_factory.mktemp("cfg") / "serve.json", body)
    with live_server(config_path, pvc_root, api_key=KEY) as (url, app):
        yield url, app


def completion(**changes):
    body = {**OK_COMPLETION, **changes}
    return {key: value for key, value in body.items() if value is not DROP}


def chat(**changes):
    body = {**OK_CHAT, **changes}
    return {key: value for key, value in body.items() if value is not DROP}


DROP = object()
C, CHAT, GEN = "/v1/completions", "/v1/chat/completions", "/generate"

# (case id, method, path, json body or raw bytes, headers, expected status, expected param or None, message part)
CASES = [
    ("model missing", "POST", C, completion(model=DROP), AUTH, 400, "model", "model"),
    ("prompt missing", "POST", C, completion(prompt=DROP), AUTH, 400, "prompt", "prompt"),
    ("prompt is a number", "POST", C, completion(prompt=5), AUTH, 400, "prompt", "prompt"),
    ("prompt empty string", "POST", C, completion(prompt=""), AUTH, 400, "prompt", "prompt"),
    ("prompt empty list", "POST", C, completion(prompt=[]), AUTH, 400, "prompt", "prompt"),
    ("token id out of vocabulary", "POST", C, completion(prompt=[5, 999999]), AUTH, 400, "prompt", "vocabulary"),
    ("prompt too many tokens", "POST", C, completion(prompt="fox " * 400), AUTH, 400, "prompt", "maxPromptTokens"),
    ("max_tokens negative", "POST", C, completion(max_tokens=-1), AUTH, 400, "max_tokens", "max_tokens"),
    ("max_tokens zero", "POST", C, completion(max_tokens=0), AUTH, 400, "max_tokens", "max_tokens"),
    ("max_tokens huge", "POST", C, completion(max_tokens=10**12), AUTH, 400, "max_tokens", "max_tokens"),
    ("max_tokens over limit", "POST", C, completion(max_tokens=9), AUTH, 400, "max_tokens", "maxNewTokensLimit"),
    ("max_tokens a word", "POST", C, completion(max_tokens="ten"), AUTH, 400, "max_tokens", "max_tokens"),
    ("temperature negative", "POST", C, completion(temperature=-0.5), AUTH, 400, "temperature", "temperature"),
    ("temperature too high", "POST", C, completion(temperature=7), AUTH, 400, "temperature", "temperature"),
    ("top_p zero", "POST", C, completion(top_p=0), AUTH, 400, "top_p", "top_p"),
    ("n zero", "POST", C, completion(n=0), AUTH, 400, "n", "n"),
    ("n too large", "POST", C, completion(n=1000), AUTH, 400, "n", "n"),
    ("too many stop strings", "POST", C, completion(stop=["a", "b", "c", "d", "e"]), AUTH, 400, "stop", "stop"),
    (
        "presence_penalty too high",
        "POST",
        C,
        completion(presence_penalty=2.5),
        AUTH,
        400,
        "presence_penalty",
        "-2 and 2",
    ),
    (
        "frequency_penalty too low",
        "POST",
        C,
        completion(frequency_penalty=-3),
        AUTH,
        400,
        "frequency_penalty",
        "-2 and",
    ),
    (
        "repetition_penalty zero",
        "POST",
        C,
        completion(repetition_penalty=0),
        AUTH,
        400,
        "repetition_penalty",
        "0.01 and 100",
    ),
    ("top_k below -1", "POST", C, completion(top_k=-2), AUTH, 400, "top_k", "0 or -1 is off"),
    ("top_k not a number", "POST", CHAT, chat(top_k="many"), AUTH, 400, "top_k", "integer"),
    ("chat penalty too high", "POST", CHAT, chat(presence_penalty=9), AUTH, 400, "presence_penalty", "-2 and 2"),
    (
        "generate repetition negative",
        "POST",
        GEN,
        {"question": "hi", "repetition_penalty": -1},
        AUTH,
        400,
        "repetition_penalty",
        "between 0.01 and 100",
    ),
    ("seed negative", "POST", C, completion(seed=-3), AUTH, 400, "seed", "seed"),
    ("unknown model", "POST", C, completion(model="gpt-9"), AUTH, 404, "model", "facts-a"),
    ("chat messages empty", "POST", CHAT, chat(messages=[]), AUTH, 400, "messages", "messages"),
    ("chat messages not a list", "POST", CHAT, chat(messages="hi"), AUTH, 400, "messages", "messages"),
    ("chat role missing", "POST", CHAT, chat(messages=[{"content": "hi"}]), AUTH, 400, "messages[0].role", "role"),
    (
        "chat role unknown",
        "POST",
        CHAT,
        chat(messages=[{"role": "robot", "content": "x"}]),
        AUTH,
        400,
        "messages[0].role",
        "role",
    ),
    (
        "chat content a number",
        "POST",
        CHAT,
        chat(messages=[{"role": "user", "content": 3}]),
        AUTH,
        400,
        "messages[0].content",
        "content",
    ),
    ("chat unknown model", "POST", CHAT, chat(model="nope"), AUTH, 404, "model", "base"),
    (
        "chat max_completion_tokens over limit",
        "POST",
        CHAT,
        chat(max_completion_tokens=50),
        AUTH,
        400,
        "max_tokens",
        "maxNewTokensLimit",
    ),
    ("bad JSON", "POST", C, b'{"model": "base", "prompt": ', AUTH, 400, None, "not valid JSON"),
    ("body is a JSON list", "POST", C, b"[1, 2]", AUTH, 400, None, ""),
    ("empty body", "POST", C, b"", AUTH, 400, None, ""),
    ("oversized body", "POST", C, completion(prompt="x" * 100_000), AUTH, 413, None, "larger than"),
    ("no API key", "POST", C, completion(), {}, 401, None, "API key"),
    ("wrong API key", "POST", C, completion(), {"Authorization": "Bearer sk-wrong"}, 401, None, "invalid API key"),
    (
        "basic auth instead of bearer",
        "POST",
        C,
        completion(),
        {"Authorization": "Basic dXNlcjpwYXNz"},
        401,
        None,
        "API key",
    ),
    ("models without key", "GET", "/v1/models", None, {}, 401, None, "API key"),
    ("GET on a POST route", "GET", C, None, AUTH, 405, None, ""),
    ("unknown route", "POST", "/v1/engines", completion(), AUTH, 404, None, "endpoint"),
    ("generate without question", "POST", GEN, {"max_tokens": 3}, AUTH, 400, "question", "question"),
    (
        "generate negative max_tokens",
        "POST",
        GEN,
        {"question": "hi", "max_tokens": -5},
        AUTH,
        400,
        "max_tokens",
        "max_tokens",
    ),
    ("generate unknown model", "POST", GEN, {"question": "hi", "model": "nope"}, AUTH, 404, "model", "nope"),
    ("retrieve unknown model", "GET", "/v1/models/ghost", None, AUTH, 404, "model", "ghost"),
]


def assert_envelope(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    return error


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "param", "text"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_request_gets_the_right_status_and_envelope(guarded, method, path, body, headers, status, param, text):
    url, _ = guarded
    kwargs = (
        {"content": body, "headers": {**headers, "Content-Type": "application/json"}}
        if isinstance(body, bytes)
        else {"json": body, "headers": headers}
    )
    response = httpx.request(method, f"{url}{path}", timeout=30, **kwargs)
    assert response.status_code == status, response.text
    error = assert_envelope(response)
    if param is not None:
        assert error["param"] == param
    assert text.lower() in error["message"].lower()


def test_unknown_fields_are_accepted_and_ignored(guarded):
    """Clients of newer API versions send fields this server does not know; they must not be refused."""
    url, _ = guarded
    extra = {"best_guess": True, "logprobs": None, "response_format": {"type": "text"}, "vendor_ext": {"a": 1}}
    for path, body in ((C, completion(**extra)), (CHAT, chat(**extra)), (GEN, {"question": "hi", **extra})):
        response = httpx.post(f"{url}{path}", json=body, headers=AUTH, timeout=30)
        assert response.status_code == 200, response.text
    message = {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {}}], "tool_calls": None}
    response = httpx.post(f"{url}{CHAT}", json=chat(messages=[message]), headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text


def test_the_table_is_big_enough():
    assert len(CASES) >= 25


def test_the_right_key_and_open_probes(guarded):
    url, _ = guarded
    assert httpx.post(f"{url}{C}", json=completion(), headers=AUTH, timeout=30).status_code == 200
    for probe in ("/health", "/ready", "/metrics"):
        assert httpx.get(f"{url}{probe}").status_code == 200


def test_fuzzing_the_openapi_schema_finds_no_server_error(guarded):
    """Schemathesis generates valid and invalid requests for every operation; none may get a 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.generation import GenerationMode

    url, app = guarded
    schema = schemathesis.openapi.from_dict(app.openapi())
    seen: dict[int, int] = {}

    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

        @settings(max_examples=120, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=schema.as_strategy(generation_mode=mode))
        def check(case):
            response = case.call(base_url=url, headers=AUTH, timeout=30)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            assert response.status_code < 500, f"{case.method} {case.path} -> {response.status_code}: {response.text}"
            if response.status_code >= 400:
                assert_envelope(httpx.Response(response.status_code, content=response.content))

        check()
    assert any(200 <= status < 300 for status in seen)  # the fuzzer also got through to the model
    assert any(400 <= status < 500 for status in seen)
