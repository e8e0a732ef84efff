"""The vLLM server image's Dockerfile: hadolint clean, pinned vLLM base, non-root, kubetune on top of vLLM's own
torch/transformers (never replacing them), the server module as entry point."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.server.test_dockerfile import _hadolint

DOCKERFILE = Path(__file__).resolve().parents[2] / "server-image" / "Dockerfile.vllm"


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
