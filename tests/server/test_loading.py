"""Loading: base/adapter mismatch refused, /ready only after loading, merged mode, the process entry point."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from kubetune.api import ServeConfig
from kubetune.api.runtime import ENV_API_KEY, ENV_HOST, ENV_PORT, ENV_PVC_ROOT, ENV_SERVE_CONFIG
from kubetune_server.engine import Engine
from kubetune_server.errors import AdapterLoadError
from kubetune_server.settings import ServerSettings

from tests.server.conftest import free_port, live_server, serve_config, write_serve_config
from tests.server.lora_factory import PROMPT
from tests.support.tiny_model import synthetic_facts

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _refusals(engine: Engine) -> dict[str, str]:
    return {a.name: a.message for a in engine.adapter_report().adapters if a.state == "Refused"}


def test_an_adapter_trained_on_another_base_is_refused(pvc_root):
    """Refused with the reason, while the base and the other adapters serve (a replica started after a hot-add
    refusal must not crash-loop where the running ones serve)."""
    config = ServeConfig.model_validate(serve_config({"alien": "foreign", "facts-a": "facts-a"}))
    engine = Engine(config, pvc_root=str(pvc_root), device="cpu")
    engine.load()
    assert engine.ready and engine.model_names() == ["base", "facts-a"]
    message = _refusals(engine)["alien"]
    assert "'alien'" in message and "other-org/other-model" in message and "ignoreBaseMismatch" in message


def test_a_merged_adapter_that_is_refused_stops_the_load(pvc_root):
    config = ServeConfig.model_validate(serve_config({"alien": "foreign"}, mergeAdapter=True))
    engine = Engine(config, pvc_root=str(pvc_root), device="cpu")
    with pytest.raises(AdapterLoadError, match="other-org/other-model"):
        engine.load()
    assert not engine.ready


def test_ignore_base_mismatch_loads_it_anyway(pvc_root):
    config = ServeConfig.model_validate(serve_config({"alien": "foreign"}, ignoreBaseMismatch=True))
    engine = Engine(config, pvc_root=str(pvc_root), device="cpu")
    engine.load()
    assert engine.model_names() == ["base", "alien"]


def test_an_adapter_folder_without_config_is_refused(pvc_root, tmp_path):
    config = ServeConfig.model_validate(serve_config({"empty": "does-not-exist"}))
    engine = Engine(config, pvc_root=str(pvc_root), device="cpu")
    engine.load()
    assert "adapter_config.json is missing" in _refusals(engine)["empty"]


class GatedEngine(Engine):
    """An engine whose loading waits for the test, to look at the server while it loads."""

    def __init__(self, *args, gate: threading.Event, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gate = gate

    def load(self) -> None:
        assert self.gate.wait(60)
        super().load()


def test_ready_is_false_until_the_model_is_loaded(pvc_root, tmp_path):
    config_path = write_serve_config(tmp_path / "serve.json", serve_config({"facts-a": "facts-a"}))
    gate = threading.Event()
    engine = GatedEngine(ServeConfig.model_validate(serve_config({"facts-a": "facts-a"})), str(pvc_root), gate=gate)
    with live_server(config_path, pvc_root, engine=engine, wait_ready=False) as (url, _):
        assert httpx.get(f"{url}/health").status_code == 200
        not_ready = httpx.get(f"{url}/ready")
        assert not_ready.status_code == 503
        assert not_ready.json()["error"]["code"] == "not_ready"
        early = httpx.post(f"{url}/v1/completions", json={"model": "base", "prompt": "hi", "max_tokens": 2})
        assert early.status_code == 503
        gate.set()
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert httpx.get(f"{url}/ready").json()["models"] == ["base", "facts-a"]


def test_merged_adapter_answers_like_the_unmerged_one(pvc_root, tmp_path):
    config_path = write_serve_config(tmp_path / "serve.json", serve_config({"facts-a": "facts-a"}, mergeAdapter=True))
    with live_server(config_path, pvc_root) as (url, _):
        assert [card["id"] for card in httpx.get(f"{url}/v1/models").json()["data"]] == ["facts-a"]
        right = 0
        for fact in synthetic_facts(0):
            body = {
                "model": "facts-a",
                "prompt": PROMPT.format(question=fact.question),
                "max_tokens": 6,
                "temperature": 0,
            }
            right += (
                httpx.post(f"{url}/v1/completions", json=body, timeout=30).json()["choices"][0]["text"] == fact.answer
            )
        assert right >= 15
        base = httpx.post(f"{url}/v1/completions", json={"model": "base", "prompt": "hi", "max_tokens": 2})
        assert base.status_code == 404


def test_settings_come_from_the_runtime_env_names():
    settings = ServerSettings.from_env(
        {
            ENV_SERVE_CONFIG: "/x/serve.json",
            ENV_API_KEY: "k",
            ENV_PORT: "9001",
            ENV_HOST: "127.0.0.1",
            ENV_PVC_ROOT: "/p",
        }
    )
    assert (settings.config_path, settings.api_key, settings.port, settings.host, settings.pvc_root) == (
        "/x/serve.json",
        "k",
        9001,
        "127.0.0.1",
        "/p",
    )
    assert "k" not in repr(settings).replace("api_key", "")
    assert ServerSettings.from_env({}).config_path == "/etc/kubetune/serve.json"
    with pytest.raises(ValueError, match=ENV_PORT):
        ServerSettings.from_env({ENV_PORT: "http"})


def _start(config_path: Path, pvc_root: Path, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        ENV_SERVE_CONFIG: str(config_path),
        ENV_PVC_ROOT: str(pvc_root),
        ENV_PORT: str(port),
        ENV_HOST: "127.0.0.1",
        "PYTHONPATH": str(REPO),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "kubetune_server"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_python_m_serves_and_drains_on_sigterm(pvc_root, tmp_path):
    body = serve_config({"facts-a": "facts-a"}, generation={"maxNewTokensLimit": 300})
    config_path = write_serve_config(tmp_path / "serve.json", body)
    port = free_port()
    process = _start(config_path, pvc_root, port)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        request = {"model": "base", "prompt": "The", "max_tokens": 300, "temperature": 0, "stream": True}
        with httpx.stream("POST", f"{url}/v1/completions", json=request, timeout=60) as stream:
            lines = stream.iter_lines()
            next(line for line in lines if line.startswith("data: {"))
            process.send_signal(signal.SIGTERM)  # mid-answer: the answer must still complete
            rest = [line for line in lines if line.startswith("data: ")]
        assert rest[-1] == "data: [DONE]"
        # uvicorn re-raises the captured SIGTERM after a clean shutdown, so the status is "terminated by SIGTERM".
        assert process.wait(60) in (0, -signal.SIGTERM)
        assert "Traceback" not in process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_python_m_exits_with_the_reason_when_a_merged_adapter_is_refused(pvc_root, tmp_path):
    body = serve_config({"alien": "foreign"}, mergeAdapter=True)
    config_path = write_serve_config(tmp_path / "serve.json", body)
    process = _start(config_path, pvc_root, free_port())
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 1
    assert "other-org/other-model" in output


def test_python_m_rejects_an_invalid_serve_config(pvc_root, tmp_path):
    config_path = tmp_path / "serve.json"
    config_path.write_text('{"baseModel": {"name": "a/b"}, "adapters": [{"name": "Bad Name"}]}')
    process = _start(config_path, pvc_root, free_port())
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 2
    assert "adapters[0].name" in output
