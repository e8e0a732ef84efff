"""Network and Hub errors: transient ones (429, 5xx, timeouts, refused connections) are retried inside the trainer
with back-off and, when they outlast the attempts, end it with exit 68 (NetworkError, retried by the Job); a 404 or
no access stays a data or model error at once. Real exception types of huggingface_hub, httpx and urllib."""

from __future__ import annotations

import http.server
import json
import urllib.error
from pathlib import Path

import httpx2
import pytest
from datasets import Dataset
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled
from kubetune.api import DatasetSpec
from kubetune.api.runtime import TrainerExit
from kubetune_trainer import retries
from kubetune_trainer.data_sources import download, load_raw_data
from kubetune_trainer.errors import InvalidInputError, NetworkError, TrainerFailure
from kubetune_trainer.retries import is_transient, with_retries

from tests.support.https import https_server as serving_https
from tests.trainer.helpers import base_spec, run_in_process, write_spec

HUB = "https://huggingface.co/api/datasets/org/data"


@pytest.fixture(autouse=True)
def online(monkeypatch):
    """The test session runs with HF_HUB_OFFLINE=1, under which no failure is a network one: these tests are online."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")


def hub_error(status: int, headers: dict[str, str] | None = None) -> HfHubHTTPError:
    response = httpx2.Response(status, headers=headers or {}, request=httpx2.Request("GET", HUB))
    return HfHubHTTPError(f"{status} Client Error for url {HUB}", response=response)


def connect_failure() -> LocalEntryNotFoundError:
    """What huggingface_hub raises when the Hub cannot be reached and nothing is cached: the cause is the network."""
    try:
        try:
            raise httpx2.ConnectError("[Errno 111] Connection refused")
        except httpx2.ConnectError as cause:
            raise LocalEntryNotFoundError("cannot find the requested files in the local cache") from cause
    except LocalEntryNotFoundError as error:
        return error


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (hub_error(429), True),
        (hub_error(503), True),
        (hub_error(500), True),
        (hub_error(404), False),
        (hub_error(401), False),
        (connect_failure(), True),
        (OfflineModeIsEnabled("offline"), False),
        (urllib.error.HTTPError(HUB, 502, "Bad Gateway", {}, None), True),
        (urllib.error.HTTPError(HUB, 403, "Forbidden", {}, None), False),
        (urllib.error.URLError(ConnectionRefusedError(111, "refused")), True),
        (TimeoutError("read timed out"), True),
        (FileNotFoundError("no such file"), False),
        (ValueError("bad config"), False),
    ],
)
def test_transient_errors_are_told_apart(error: Exception, transient: bool):
    assert is_transient(error) is transient


def test_nothing_is_transient_in_offline_mode(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not is_transient(hub_error(503))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert not is_transient(ConnectionError("Couldn't reach 'org/data' on the Hub (OfflineModeIsEnabled)"))


def failing(errors: list[Exception], result: str = "ok"):
    calls = []

    def call() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return result

    return call, calls


def test_transient_failures_are_retried_with_back_off_and_retry_after():
    call, calls = failing([hub_error(503), hub_error(429, {"Retry-After": "7"})])
    slept: list[float] = []
    assert with_retries("loading x", call, sleep=slept.append) == "ok"
    assert len(calls) == 3 and slept == [2.0, 7.0]


def test_a_lasting_transient_failure_becomes_a_network_error():
    call, calls = failing([hub_error(503)] * 10)
    slept: list[float] = []
    with pytest.raises(NetworkError, match=r"loading x: still failing after 4 attempts .*503") as caught:
        with_retries("loading x", call, attempts=4, sleep=slept.append)
    assert caught.value.exit_code == TrainerExit.NETWORK == 68
    assert len(calls) == 4 and slept == [2.0, 4.0, 8.0]


def test_a_permanent_failure_is_not_retried():
    call, calls = failing([hub_error(404)])
    with pytest.raises(HfHubHTTPError):
        with_retries("loading x", call, sleep=lambda _: pytest.fail("slept"))
    assert len(calls) == 1


def hub_dataset(monkeypatch, errors: list[Exception]) -> list[int]:
    """Make datasets.load_dataset fail with `errors` first, then return two rows; returns the call log."""
    import datasets

    calls: list[int] = []

    def load_dataset(*args, **kwargs):
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return Dataset.from_list([{"text": "a"}, {"text": "b"}])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(retries.time, "sleep", lambda _: None)
    return calls


def test_hub_dataset_rate_limits_are_waited_out(monkeypatch):
    calls = hub_dataset(monkeypatch, [hub_error(429), hub_error(502)])
    raw = load_raw_data(DatasetSpec.model_validate({"hf": {"name": "org/data"}}))
    assert len(raw.train) == 2 and len(calls) == 3


def test_a_missing_hub_dataset_is_still_invalid_input_at_once(monkeypatch):
    calls = hub_dataset(monkeypatch, [hub_error(404)])
    with pytest.raises(InvalidInputError, match=r"dataset.hf: cannot load 'org/data'"):
        load_raw_data(DatasetSpec.model_validate({"hf": {"name": "org/data"}}))
    assert len(calls) == 1


def test_the_trainer_exits_68_when_the_hub_stays_unavailable(monkeypatch, pvc_root: Path, tmp_path: Path):
    hub_dataset(monkeypatch, [hub_error(503)] * 20)
    spec = base_spec(dataset={"hf": {"name": "org/data"}, "format": "text"})
    assert run_in_process(write_spec(tmp_path, spec), tmp_path / "output", pvc_root) == TrainerExit.NETWORK
    summary = json.loads((tmp_path / "termination-log").read_text())
    assert summary["exitReason"] == "NetworkError" and summary["exitCode"] == 68
    assert "still failing after 6 attempts" in summary["message"] and "503" in summary["message"]


class Flaky(http.server.BaseHTTPRequestHandler):
    """503 for the first `failures` requests, then the file; 404 for any other path."""

    failures = 0
    served: list[int] = []

    def do_GET(self):
        if self.path != "/rows.jsonl":
            self.send_error(404)
            return
        Flaky.served.append(1)
        if len(Flaky.served) <= Flaky.failures:
            self.send_error(503)
            return
        body = b'{"text": "a"}\n'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def loopback(address) -> str | None:
    """The download's address policy for this test server on 127.0.0.1 (the trainer's refuses it)."""
    return None


@pytest.fixture
def flaky_server(tmp_path: Path, monkeypatch):
    """A loopback https server (self-signed certificate trusted through SSL_CERT_FILE) playing Flaky."""
    Flaky.served = []
    with serving_https(tmp_path, Flaky) as (url, certificate):
        monkeypatch.setenv("SSL_CERT_FILE", str(certificate))
        yield url


def test_a_dataset_download_outlasts_two_503s(monkeypatch, flaky_server: str, tmp_path: Path):
    monkeypatch.setattr(retries.time, "sleep", lambda _: None)
    Flaky.failures = 2
    target = download(f"{flaky_server}/rows.jsonl", tmp_path / "dl", policy=loopback)
    assert target.read_bytes() == b'{"text": "a"}\n' and len(Flaky.served) == 3


def test_a_missing_dataset_file_is_invalid_input_at_once(monkeypatch, flaky_server: str, tmp_path: Path):
    monkeypatch.setattr(retries.time, "sleep", lambda _: pytest.fail("slept"))
    with pytest.raises(InvalidInputError, match=r"HTTP 404"):
        download(f"{flaky_server}/missing.jsonl", tmp_path / "dl", policy=loopback)


def test_an_untrusted_certificate_is_not_waited_out(monkeypatch, flaky_server: str, tmp_path: Path):
    monkeypatch.delenv("SSL_CERT_FILE")
    monkeypatch.setattr(retries.time, "sleep", lambda _: pytest.fail("slept"))
    with pytest.raises(TrainerFailure, match=r"CERTIFICATE_VERIFY_FAILED"):
        download(f"{flaky_server}/rows.jsonl", tmp_path / "dl", policy=loopback)
    assert Flaky.served == []
