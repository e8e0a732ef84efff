"""The trainer and server images, built from their Dockerfiles on the test base (CPU torch of the pinned version),
run as the operator's pods run them: the trainer image fine-tunes the tiny model from a spec file into its output
folder with nothing but its entry point and defaults; the server image serves that adapter on its base and answers.
What they write is writable as OpenShift's restricted-v2 runs them too: an arbitrary UID in group 0."""

from __future__ import annotations

import importlib.metadata
import json
import os
import socket
import time
from pathlib import Path

import httpx
import pytest
from kubetune.api import runtime

from tests.support import images
from tests.support.tiny_model import build_tiny_model, synthetic_facts, write_facts_jsonl
from tests.trainer.helpers import base_spec, fact_prompt

# A cold cache builds the base and the images inside the first test: minutes, more on vfs storage.
pytestmark = [pytest.mark.images, pytest.mark.slow, pytest.mark.timeout(images.BUILD_TIMEOUT)]

PVC = runtime.PVC_ROOT
OPENSHIFT_USER = "1000870000:0"  # restricted-v2: a UID from the namespace's range, group 0
# Shown to the containers as they run in a pod: offline (no Hub here), two threads.
POD_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "2"}


@pytest.fixture(scope="module")
def claims(tmp_path_factory) -> Path:
    """Host folders standing for the PVCs: 'models' (the tiny base) and 'data' (the 16 facts)."""
    root = tmp_path_factory.mktemp("claims")
    build_tiny_model(root / "models" / "tiny")
    write_facts_jsonl(root / "data" / "facts.jsonl", "alpaca")
    for path in root.rglob("*"):  # provisioned for every pod: readable by any user (transformers saves 0600)
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


@pytest.fixture(scope="module")
def trained(buildah, claims, tmp_path_factory) -> dict:
    """One run of the trainer image as its Job runs it; returns the output folder and what the run printed."""
    image = images.built("trainer")
    spec_dir = tmp_path_factory.mktemp("spec")
    spec_dir.chmod(0o755)  # a ConfigMap volume: readable by every user
    (spec_dir / runtime.SPEC_FILE).write_text(json.dumps(base_spec()))
    output = tmp_path_factory.mktemp("output")
    os.chown(output, 1000, 0)  # a fresh PVC the pod's user may write (fsGroup or a provisioner does this)
    one = images.Container(buildah, image)
    try:
        result = one.run(
            [],  # the image's defaults: --spec /etc/kubetune/spec.json --output /workspace/output
            env={**POD_ENV, runtime.ENV_TERMINATION_LOG: f"{runtime.DEFAULT_OUTPUT}/termination-log"},
            mounts=[
                images.Mount(claims / "models", f"{PVC}/models"),
                images.Mount(claims / "data", f"{PVC}/data"),
                images.Mount(spec_dir, runtime.SPEC_DIR),
                images.Mount(output, runtime.DEFAULT_OUTPUT, read_only=False),
            ],
            timeout=900,
        )
    finally:
        one.remove()
    return {"output": output, "result": result, "image": image}


def test_trainer_image_fine_tunes_from_a_spec_file(trained):
    result, adapter = trained["result"], trained["output"] / runtime.ADAPTER_DIR
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (adapter / "adapter_model.safetensors").is_file()
    metrics = json.loads((adapter / runtime.METRICS_FILE).read_text())
    assert metrics["evalLoss"] < 0.3 < metrics["trainLoss"]
    summary = json.loads((trained["output"] / "termination-log").read_text())
    assert summary["exitReason"] == "Succeeded"


def test_trainer_image_runs_the_torch_the_tests_run(trained):
    """One torch per image: the image's torch (from requirements/torch.txt) is the venv's, wheel for wheel."""
    manifest = json.loads((trained["output"] / runtime.ADAPTER_DIR / runtime.MANIFEST_FILE).read_text())
    assert manifest["libraries"]["torch"] == importlib.metadata.version("torch")
    pinned = (images.TORCH_PIN.read_text().split("torch==")[1]).split()[0]
    assert manifest["libraries"]["torch"].split("+")[0] == pinned
    assert manifest["libraries"]["kubetune"] == importlib.metadata.version("kubetune")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(url: str, running: images.Running, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running.process.poll() is not None:
            raise AssertionError(f"the server exited ({running.process.returncode}):\n{running.output()[-4000:]}")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the server was not ready within {timeout} s")


def test_server_image_serves_the_trained_adapter(trained, claims, buildah, tmp_path):
    assert trained["result"].returncode == 0, "needs the trainer image's adapter"
    image = images.built("server")
    serve = {
        "baseModel": {"pvc": {"claimName": "models", "path": "tiny"}},
        "adapters": [{"name": "facts", "pvc": {"claimName": "facts-output", "path": runtime.ADAPTER_DIR}}],
        "generation": {"maxNewTokens": 8},
    }
    (tmp_path / runtime.SERVE_CONFIG_FILE).write_text(json.dumps(serve))
    tmp_path.chmod(0o755)  # a ConfigMap volume: readable by every user
    port = _free_port()
    one = images.Container(buildah, image)
    running = one.start(
        env={**POD_ENV, runtime.ENV_HOST: "127.0.0.1", runtime.ENV_PORT: str(port)},
        mounts=[
            images.Mount(claims / "models", f"{PVC}/models"),
            images.Mount(trained["output"], f"{PVC}/facts-output"),
            images.Mount(tmp_path, runtime.SPEC_DIR),
        ],
    )
    started = time.monotonic()
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, running)

        def answer(model: str, question: str) -> str:
            body = {"model": model, "prompt": fact_prompt(question), "max_tokens": 8, "temperature": 0}
            response = httpx.post(f"{url}/v1/completions", json=body, timeout=60)
            assert response.status_code == 200, response.text
            return response.json()["choices"][0]["text"].strip()

        facts = synthetic_facts()
        assert sum(answer("facts", fact.question) == fact.answer for fact in facts) >= 14
        assert sum(answer("base", fact.question) == fact.answer for fact in facts) <= 1
    finally:
        code = running.stop()  # SIGTERM, as the kubelet: the server drains and exits 0
        images.TIMINGS.add("server runs", time.monotonic() - started)
        one.remove()
    assert code == 0, running.output()[-4000:]


@pytest.mark.parametrize(
    ("name", "writable"),
    [
        ("trainer", ["$HOME", "$HF_HOME", runtime.DEFAULT_OUTPUT]),
        ("server", ["$HOME", "$HF_HOME"]),
    ],
)
def test_writable_paths_are_writable_by_an_arbitrary_uid_in_group_0(name, writable, buildah, container):
    """OpenShift's restricted-v2 ignores USER: group 0 must own what the image writes, with the user's rights."""
    image = images.built(name)
    probe = " && ".join(f'touch "{path}/.probe-$(id -u)"' for path in writable)
    result = container(image).run([], entrypoint=["sh", "-c", f"{probe} && id -u && id -g"], user=OPENSHIFT_USER)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1000870000", "0"]
