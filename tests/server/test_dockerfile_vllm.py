"""The vLLM server image's Dockerfile: hadolint clean, pinned vLLM base, non-root, kubetune on top of vLLM's own
torch/transformers (never replacing them), the server module as entry point."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.server.test_dockerfile import _hadolint

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "server-image" / "Dockerfile.vllm"


def test_hadolint_finds_nothing():
    result = subprocess.run([_hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_image_shape():
    text = DOCKERFILE.read_text()
    base = re.search(r"^ARG BASE=(\S+)", text, re.MULTILINE).group(1)
    assert base.startswith("vllm/vllm-openai:v") and not base.endswith(":latest")  # vLLM's image, a pinned tag
    user = re.findall(r"^USER (\S+)", text, re.MULTILINE)[-1]
    assert user.split(":")[0] not in {"root", "0"}
    assert "--constraint /tmp/base-constraints.txt" in text  # vLLM's torch and transformers stay
    assert "--no-deps ." in text
    assert 'ENTRYPOINT ["python3", "-m", "kubetune_server"]' in text
    assert "VLLM_NO_USAGE_STATS=1" in text


def test_the_transformers_fallback_has_what_it_needs_in_the_server_extras_versions():
    """`auto` falls back to the transformers engine in this image (engine_choice.py): peft, and bitsandbytes +
    accelerate for a quantized base, at the versions of pyproject's server extra, checked by importing them."""
    text = DOCKERFILE.read_text()
    assert "['optional-dependencies']['server']" in text  # the versions come from the one definition
    assert "(peft|bitsandbytes|accelerate)" in text
    assert "-r /tmp/fallback.txt" in text and "--constraint /tmp/base-constraints.txt -r /tmp/fallback.txt" in text
    assert re.search(r"import vllm, peft, bitsandbytes, accelerate, kubetune_server", text)
    command = re.search(r'(python3 -c "import re, tomllib;.*?") > /tmp/fallback.txt', text, re.DOTALL).group(1)
    command = command.replace("python3", sys.executable, 1)
    listed = subprocess.run(["sh", "-c", command], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["server"]
    wanted = [r for r in extra if r.split(">")[0].split("=")[0].split("<")[0] in {"peft", "bitsandbytes", "accelerate"}]
    assert listed.stdout.split() == wanted and len(wanted) == 3
