"""Progress reporting: the status PATCH a loopback fake API server receives, throttling, failure tolerance,
the file fallback and the size-capped termination message."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
from kubetune.api import Progress, TrainingMetrics
from kubetune.api.runtime import ENV_JOB_NAME, ENV_NAMESPACE, ENV_REPORT_CONFIGMAP, ENV_TERMINATION_LOG, PROGRESS_FILE
from kubetune_trainer.kube_status import KubeStatusClient
from kubetune_trainer.reporting import FileSink, KubeStatusSink, ProgressCallback
from kubetune_trainer.termination import MAX_TERMINATION_BYTES, encode_summary, write_termination_message

TOKEN = "secret-service-account-token"


class FakeApiServer:
    """Records PATCH requests like the API server's status subresource would receive them."""

    def __init__(self, status: int = 200) -> None:
        self.requests: list[dict] = []
        self.status = status
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_PATCH(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeApiServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


def reported(request: dict) -> dict:
    """What one report patch said: each data value of the ConfigMap is a JSON document."""
    assert set(request["body"]) == {"data"}
    return {key: json.loads(value) for key, value in request["body"]["data"].items()}


def client_for(server: FakeApiServer, token_file: Path) -> KubeStatusClient:
    return KubeStatusClient(server.url, "team-a", "sentiment-v1-report", token_file)


def test_status_patch_path_body_and_headers(token_file: Path):
    with FakeApiServer() as server:
        assert client_for(server, token_file).patch_status({"progress": {"step": 3, "totalSteps": 10}})
    [request] = server.requests
    assert request["path"] == "/api/v1/namespaces/team-a/configmaps/sentiment-v1-report"
    assert request["body"] == {"data": {"progress": '{"step": 3, "totalSteps": 10}'}}
    assert request["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert request["headers"]["Content-Type"] == "application/merge-patch+json"


def test_a_rotated_token_is_picked_up(token_file: Path):
    with FakeApiServer() as server:
        client = client_for(server, token_file)
        client.patch_status({"progress": {"step": 1}})
        token_file.write_text("rotated-token")
        client.patch_status({"progress": {"step": 2}})
    assert server.requests[1]["headers"]["Authorization"] == "Bearer rotated-token"


@pytest.mark.parametrize("status", [403, 500])
def test_a_failed_patch_is_a_warning_without_the_token(status: int, token_file: Path, caplog):
    caplog.set_level(logging.WARNING)
    with FakeApiServer(status=status) as server:
        assert client_for(server, token_file).patch_status({"progress": {"step": 1}}) is False
    assert f"HTTP {status}" in caplog.text
    assert TOKEN not in caplog.text


def test_an_unreachable_api_server_does_not_raise(token_file: Path, caplog):
    client = KubeStatusClient("http://127.0.0.1:9", "ns", "job", token_file, timeout=1)
    assert client.patch_status({"progress": {}}) is False
    assert TOKEN not in caplog.text


def test_client_from_the_pod_environment(tmp_path: Path):
    account = tmp_path / "sa"
    account.mkdir()
    (account / "token").write_text(TOKEN)
    (account / "namespace").write_text("team-b\n")
    env = {
        "KUBERNETES_SERVICE_HOST": "10.0.0.1",
        "KUBERNETES_SERVICE_PORT": "6443",
        ENV_REPORT_CONFIGMAP: "job-1-report",
    }
    client = KubeStatusClient.from_environment(env, account)
    assert client is not None and client.base_url == "https://10.0.0.1:6443"
    assert (client.namespace, client.name) == ("team-b", "job-1-report")
    explicit = KubeStatusClient.from_environment({**env, ENV_NAMESPACE: "team-c"}, account)
    assert explicit.namespace == "team-c"
    assert KubeStatusClient.from_environment({ENV_REPORT_CONFIGMAP: "job-1-report"}, account) is None, "not in a pod"
    assert KubeStatusClient.from_environment({**env, ENV_REPORT_CONFIGMAP: ""}, account) is None, "no report object"
    assert KubeStatusClient.from_environment(env, tmp_path / "none") is None, "no token"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def state(step: int, total: int = 100, epoch: float = 0.0, main: bool = True):
    return SimpleNamespace(global_step=step, max_steps=total, epoch=epoch, is_world_process_zero=main)


def test_reports_are_throttled_and_carry_loss_eta_and_percent(token_file: Path):
    clock = FakeClock()
    with FakeApiServer() as server:
        callback = ProgressCallback(KubeStatusSink(client_for(server, token_file)), min_interval=5.0, clock=clock)
        callback.on_train_begin(None, state(0), None)
        for step in range(1, 11):  # ten steps in 4.5 s: within the interval, nothing more is sent
            clock.now += 0.45
            callback.on_log(None, state(step, epoch=step / 50), None, logs={"loss": 2.0 - step / 10})
            callback.on_step_end(None, state(step, epoch=step / 50), None)
        clock.now += 1.0  # 5.5 s after the first report
        callback.on_log(None, state(11, epoch=0.22), None, logs={"eval_loss": 0.75})
        callback.on_train_end(None, state(11, epoch=0.22), None)
    bodies = [reported(request)["progress"] for request in server.requests]
    assert [body["step"] for body in bodies] == [0, 11, 11], "start, first after 5 s, forced at the end"
    last = bodies[1]
    assert last["totalSteps"] == 100 and last["percent"] == 11 and last["epoch"] == 0.22
    assert last["loss"] == pytest.approx(1.0) and last["evalLoss"] == 0.75
    assert abs(last["etaSeconds"] - 5.5 / 11 * 89) <= 1, "elapsed / steps done x steps left"
    assert Progress.model_validate(last).step == 11, "the body is the API's Progress in wire form"
    assert all(set(reported(request)) == {"progress"} for request in server.requests), (
        "the trainer writes only progress while training"
    )


def test_by_default_a_trainer_writes_its_status_at_most_every_30_seconds(token_file: Path):
    """Hundreds of trainers at once: each may cost the API server (and every FineTuneJob watcher) one write per
    30 s while training, plus the first and the last report."""
    clock = FakeClock()
    with FakeApiServer() as server:
        callback = ProgressCallback(KubeStatusSink(client_for(server, token_file)), clock=clock)
        callback.on_train_begin(None, state(0), None)
        for step in range(1, 91):  # one step a second for 90 s, each logged
            clock.now += 1.0
            callback.on_log(None, state(step), None, logs={"loss": 1.0})
            callback.on_step_end(None, state(step), None)
        callback.on_train_end(None, state(90), None)
    steps = [reported(request)["progress"]["step"] for request in server.requests]
    assert steps == [0, 30, 60, 90, 90], "start, every 30 s (not at 29 s), forced at the end"


def test_only_the_main_process_reports(tmp_path: Path):
    callback = ProgressCallback(FileSink(tmp_path))
    callback.on_train_begin(None, state(0, main=False), None)
    assert not (tmp_path / PROGRESS_FILE).exists()


def test_final_metrics_go_with_the_last_progress(token_file: Path):
    with FakeApiServer() as server:
        KubeStatusSink(client_for(server, token_file)).finish(
            Progress(step=5, total_steps=5, percent=100), TrainingMetrics(eval_loss=0.5, steps=5)
        )
    status = reported(server.requests[0])
    assert status["metrics"] == {"evalLoss": 0.5, "steps": 5}
    assert status["progress"]["percent"] == 100


def test_progress_file_outside_a_pod(tmp_path: Path):
    sink = FileSink(tmp_path)
    sink.report(Progress(step=2, total_steps=4, percent=50))
    assert json.loads((tmp_path / PROGRESS_FILE).read_text())["progress"]["percent"] == 50
    assert not list(tmp_path.glob(".*.tmp")), "written through a temp file and renamed"


def test_termination_message_is_capped_at_4k(tmp_path: Path, monkeypatch):
    summary = {"exitReason": "InvalidInput", "exitCode": 64, "message": "bad row " * 2000}
    data = encode_summary(summary)
    assert len(data) <= MAX_TERMINATION_BYTES
    decoded = json.loads(data)
    assert decoded["exitReason"] == "InvalidInput" and decoded["message"].endswith("...")
    monkeypatch.setenv(ENV_TERMINATION_LOG, str(tmp_path / "termination-log"))
    assert write_termination_message({"exitReason": "Succeeded"}) == tmp_path / "termination-log"
    assert json.loads((tmp_path / "termination-log").read_text()) == {"exitReason": "Succeeded"}


def test_a_run_in_a_pod_reports_to_the_api_server_over_tls(pvc_root: Path, tmp_path: Path, monkeypatch):
    """The whole path: service account files, in-cluster env, TLS with the account's CA, real training events."""
    import ssl
    import subprocess

    from kubetune.api.runtime import ADAPTER_DIR

    from tests.trainer.helpers import base_spec, run_in_process, write_spec

    account = tmp_path / "serviceaccount"
    account.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=kubernetes",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(tmp_path / "key.pem"),
         "-out", str(account / "ca.crt")],
        check=True, capture_output=True,
    )  # fmt: skip
    (account / "token").write_text(TOKEN)
    (account / "namespace").write_text("team-a")
    monkeypatch.setattr("kubetune_trainer.kube_status.SERVICE_ACCOUNT_DIR", account)
    with FakeApiServer() as server:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(account / "ca.crt", tmp_path / "key.pem")
        server.server.socket = context.wrap_socket(server.server.socket, server_side=True)
        env = {
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(server.server.server_address[1]),
            ENV_JOB_NAME: "facts-job",
            ENV_REPORT_CONFIGMAP: "facts-job-report",
        }
        spec = base_spec(
            training={"maxSteps": 3, "loggingSteps": 1}, evaluation={"humanEvalSamples": 2, "maxNewTokens": 4}
        )
        assert run_in_process(write_spec(tmp_path, spec), tmp_path / "output", pvc_root, **env) == 0
    assert server.requests, "the trainer patched its report ConfigMap"
    assert {r["path"] for r in server.requests} == {"/api/v1/namespaces/team-a/configmaps/facts-job-report"}
    assert all(r["headers"]["Authorization"] == f"Bearer {TOKEN}" for r in server.requests)
    final = reported(server.requests[-1])
    assert final["progress"]["step"] == 3 and final["progress"]["percent"] == 100
    assert final["metrics"]["steps"] == 3 and "evalLoss" in final["metrics"]
    assert (final["metrics"]["truncatedRows"], final["metrics"]["droppedRows"]) == (0, 0), "counted in .status"
    assert final["metrics"]["skippedRows"] == 0
    assert not (tmp_path / "output" / PROGRESS_FILE).exists(), "in a pod, progress goes to the report ConfigMap only"
    assert (tmp_path / "output" / ADAPTER_DIR / "adapter_config.json").is_file()
    _assert_results_reported(server.requests, tmp_path / "output")


def _assert_results_reported(requests: list[dict], output: Path) -> None:
    """The run wrote the loss-curve picture (linked from its card) and a 2-prompt review sheet, and sent all the
    result files, byte for byte, in one patch before the final metrics."""
    import base64
    import csv

    from kubetune.api.runtime import ADAPTER_DIR, HUMAN_EVAL_FILE, LOSS_CURVES_FILE, METRICS_FILE, MODEL_CARD_FILE
    from PIL import Image

    adapter = output / ADAPTER_DIR
    with Image.open(adapter / LOSS_CURVES_FILE) as picture:
        assert picture.format == "PNG"
    assert f"]({LOSS_CURVES_FILE})" in (adapter / MODEL_CARD_FILE).read_text(encoding="utf-8")
    with (output / HUMAN_EVAL_FILE).open(encoding="utf-8", newline="") as handle:
        sheet = list(csv.DictReader(handle))
    assert len(sheet) == 2 and all(row["prompt"] and row["reference"] for row in sheet)
    [patch] = [request["body"] for request in requests if "binaryData" in request["body"]]
    assert requests[-1]["body"]["data"].keys() == {"progress", "metrics"}, "the results came before the end"
    data, binary = patch["data"], patch["binaryData"]
    assert base64.b64decode(binary[f"results.{LOSS_CURVES_FILE}"]) == (adapter / LOSS_CURVES_FILE).read_bytes()
    for name, folder in ((MODEL_CARD_FILE, adapter), (METRICS_FILE, adapter), (HUMAN_EVAL_FILE, output)):
        assert data[f"results.{name}"].encode() == (folder / name).read_bytes(), name
    index = json.loads(data["results"])["files"]
    assert index[HUMAN_EVAL_FILE]["rows"] == index[HUMAN_EVAL_FILE]["rowsIncluded"] == 2
