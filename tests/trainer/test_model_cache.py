"""The shared model cache (kubetune.model_cache) with real processes against a Hub stand-in: two pods that need
the same model at once download each file exactly once (the second waits on the lock, then reads), and a model in
the cache loads with no file fetched; a half-finished download is never taken as complete."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from kubetune.model_cache import cached_commit, marker_path

from tests.support.fake_hub import FakeHub
from tests.support.tiny_model import build_tiny_model
from tests.trainer.helpers import REPO_ROOT

REPO = "kubetune-test/tiny"
LOAD = """
import sys
from pathlib import Path
from kubetune.model_cache import ensure_cached
from transformers import AutoModelForCausalLM
commit = ensure_cached(Path(sys.argv[1]), sys.argv[2], None, None, False)
model = AutoModelForCausalLM.from_pretrained(sys.argv[2], revision=commit, local_files_only=True)
print("loaded", commit, model.name_or_path)
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> FakeHub:
    with FakeHub({REPO: build_tiny_model(tmp_path_factory.mktemp("hub") / "tiny")}) as served:
        yield served


def loaders(hub: FakeHub, cache: Path, count: int) -> list[subprocess.Popen]:
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(cache),
        "PYTHONPATH": str(REPO_ROOT),
        "OMP_NUM_THREADS": "1",
    }
    command = [sys.executable, "-c", LOAD, str(cache), REPO]
    return [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(count)
    ]


def test_two_pods_at_once_download_each_file_once_and_a_third_downloads_nothing(hub: FakeHub, tmp_path: Path):
    cache = tmp_path / "cache"
    hub.downloads.clear()
    for process in loaders(hub, cache, 2):
        output, _ = process.communicate(timeout=240)
        assert process.returncode == 0 and f"loaded {hub.commits[REPO]} {REPO}" in output, output[-2000:]
    assert hub.downloads and set(hub.downloads.values()) == {1}, hub.downloads
    assert {name for _, name in hub.downloads} >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert cached_commit(cache, REPO, None) == hub.commits[REPO]

    fetched, asked = sum(hub.downloads.values()), len(hub.requests)
    (third,) = loaders(hub, cache, 1)
    output, _ = third.communicate(timeout=240)
    assert third.returncode == 0, output[-2000:]
    assert sum(hub.downloads.values()) == fetched
    # Not even the repository's file list is asked for: the marker says the model is complete (what remains is
    # transformers probing for an optional adapter_config.json, and hub telemetry).
    assert not [request for request in hub.requests[asked:] if f"/api/models/{REPO}" in request], hub.requests


def test_files_without_a_marker_are_not_a_cached_model(tmp_path: Path):
    marker = marker_path(tmp_path, REPO, None)
    assert cached_commit(tmp_path, REPO, None) is None
    marker.parent.mkdir(parents=True)
    marker.write_text("{not json")  # a marker cut short is no marker
    assert cached_commit(tmp_path, REPO, None) is None
    marker.write_text('{"commit": "abc"}')
    assert cached_commit(tmp_path, REPO, None) == "abc"
