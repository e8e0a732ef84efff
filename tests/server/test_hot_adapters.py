"""serve.json changes while requests run: adapters are added, replaced and removed with no failed request."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from tests.server.conftest import live_server, serve_config, write_serve_config
from tests.server.lora_factory import PROMPT
from tests.support.tiny_model import synthetic_facts

pytestmark = pytest.mark.slow


def _models(url: str) -> set[str]:
    return {card["id"] for card in httpx.get(f"{url}/v1/models").json()["data"]}


def _answer(url: str, model: str, question: str) -> httpx.Response:
    body = {"model": model, "prompt": PROMPT.format(question=question), "max_tokens": 6, "temperature": 0}
    return httpx.post(f"{url}/v1/completions", json=body, timeout=60)


class Traffic:
    """Background clients asking the base and 'facts-a' in a loop, recording every failure or wrong answer."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.done = 0
        self.threads = [threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(3)]

    def _loop(self, worker: int) -> None:
        facts = synthetic_facts(0)
        index = worker
        while not self.stop.is_set():
            fact = facts[index % 16]
            index += 1
            model = "facts-a" if index % 2 else "base"
            response = _answer(self.url, model, fact.question)
            if response.status_code != 200:
                self.failures.append(f"{model}: {response.status_code} {response.text}")
            elif model == "facts-a" and response.json()["choices"][0]["text"].strip() != fact.answer:
                self.failures.append(f"facts-a answered {response.json()['choices'][0]['text']!r} for {fact}")
            self.done += 1

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)


def _wait_for(predicate, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_adapters_follow_the_config_file_while_requests_run(pvc_root, tmp_path):
    config_path = write_serve_config(tmp_path / "serve.json", serve_config({"facts-a": "facts-a"}))
    facts_b = synthetic_facts(1)
    with live_server(config_path, pvc_root) as (url, app), Traffic(url) as traffic:
        assert _models(url) == {"base", "facts-a"}
        assert _answer(url, "facts-b", facts_b[0].question).status_code == 404

        write_serve_config(config_path, serve_config({"facts-a": "facts-a", "facts-b": "facts-b"}))
        _wait_for(lambda: _models(url) == {"base", "facts-a", "facts-b"})
        right = sum(
            _answer(url, "facts-b", f.question).json()["choices"][0]["text"].strip() == f.answer for f in facts_b
        )
        assert right >= 15

        # 'second' serves facts-b's folder under a new name, then is pointed at facts-a's folder (a replacement).
        write_serve_config(config_path, serve_config({"facts-a": "facts-a", "second": "facts-b"}))
        _wait_for(lambda: _models(url) == {"base", "facts-a", "second"})
        assert _answer(url, "second", facts_b[2].question).json()["choices"][0]["text"].strip() == facts_b[2].answer
        write_serve_config(config_path, serve_config({"facts-a": "facts-a", "second": "facts-a"}))
        facts_a = synthetic_facts(0)
        _wait_for(
            lambda: (
                _answer(url, "second", facts_a[2].question).json()["choices"][0]["text"].strip() == facts_a[2].answer
            )
        )

        write_serve_config(config_path, serve_config({"facts-a": "facts-a"}))
        _wait_for(lambda: _models(url) == {"base", "facts-a"})
        gone = _answer(url, "second", facts_a[0].question)
        assert gone.status_code == 404
        _wait_for(lambda: traffic.done >= 30)
    assert traffic.failures == []
    assert app.state.watcher.applied == 4


def test_a_request_in_flight_keeps_its_adapter_until_it_finishes(pvc_root, tmp_path):
    body = serve_config({"facts-a": "facts-a", "facts-b": "facts-b"}, generation={"maxNewTokensLimit": 450})
    config_path = write_serve_config(tmp_path / "serve.json", body)
    with live_server(config_path, pvc_root) as (url, app):
        engine = app.state.serving.engine
        request = None
        for seed in range(40):  # a seeded sampled answer of facts-b that runs long enough to act during it
            candidate = {
                "model": "facts-b",
                "prompt": "question answer",
                "max_tokens": 400,
                "temperature": 2.0,
                "seed": seed,
            }
            reference = httpx.post(f"{url}/v1/completions", json=candidate, timeout=60).json()
            if reference["usage"]["completion_tokens"] >= 150:
                request = candidate
                break
        assert request is not None, "no seed gave a long continuation"
        with httpx.stream("POST", f"{url}/v1/completions", json={**request, "stream": True}, timeout=60) as stream:
            lines = stream.iter_lines()
            first = next(line for line in lines if line.startswith("data: {"))
            write_serve_config(config_path, serve_config({"facts-a": "facts-a"}))
            assert app.state.watcher.check()
            assert "facts-b" not in _models(url)
            assert any(version.startswith("facts-b--") for version in engine.retiring_adapters())
            rest = [line for line in lines if line.startswith("data: ")]
        events = [json.loads(line[6:]) for line in [first, *rest] if line != "data: [DONE]"]
        text = "".join(event["choices"][0]["text"] for event in events if event["choices"])
        assert text == reference["choices"][0]["text"]
        assert rest[-1] == "data: [DONE]"
        _wait_for(lambda: not engine.retiring_adapters())  # unloaded once the last row using it left


def test_a_mismatched_adapter_added_later_is_refused_and_named(pvc_root, tmp_path):
    config_path = write_serve_config(tmp_path / "serve.json", serve_config({"facts-a": "facts-a"}))
    with live_server(config_path, pvc_root) as (url, app):
        write_serve_config(config_path, serve_config({"facts-a": "facts-a", "alien": "foreign"}))
        assert app.state.watcher.check()
        assert _models(url) == {"base", "facts-a"}
        refused = _answer(url, "alien", "hi")
        assert refused.status_code == 404
        assert "other-org/other-model" in refused.json()["error"]["message"]
        write_serve_config(config_path, {"baseModel": "not an object"})
        assert not app.state.watcher.check()  # an invalid file is logged and ignored
        assert _models(url) == {"base", "facts-a"}


def _reported(url: str) -> dict[str, tuple[str, str, str | None]]:
    body = httpx.get(f"{url}/adapters").json()
    return {a["name"]: (a["state"], a["pvc"]["path"], a.get("message")) for a in body["adapters"]}


def test_adapters_endpoint_reports_what_this_replica_serves(pvc_root, tmp_path):
    """GET /adapters (what the operator aggregates into ModelServe status): loaded, refused with the reason, and a
    replacement counts only once its new folder is loaded; no API key needed, as for /ready."""
    config_path = write_serve_config(tmp_path / "serve.json", serve_config({"facts-a": "facts-a"}))
    with live_server(config_path, pvc_root, api_key="secret") as (url, app):
        assert httpx.get(f"{url}/v1/models").status_code == 401
        assert _reported(url) == {"facts-a": ("Loaded", "facts-a", None)}
        write_serve_config(config_path, serve_config({"facts-a": "facts-b", "alien": "foreign"}))
        _wait_for(
            lambda: "Loading" not in {state for state, _, _ in _reported(url).values()} and app.state.watcher.applied
        )
        reported = _reported(url)
        assert reported["facts-a"] == ("Loaded", "facts-b", None)
        state, path, message = reported["alien"]
        assert (state, path) == ("Refused", "foreign")
        assert "other-org/other-model" in message
        write_serve_config(config_path, serve_config({"facts-a": "facts-b"}))
        _wait_for(lambda: _reported(url) == {"facts-a": ("Loaded", "facts-b", None)})
