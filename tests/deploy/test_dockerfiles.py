"""hadolint on every Dockerfile of the repository (errors and warnings fail; info-level hints do not)."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.support.binaries import REPO_ROOT, hadolint

from . import render

SKIPPED_DIRS = {".git", ".venv", ".venv-vllm", ".tools", "node_modules", "build", "dist"}


def dockerfiles() -> list:
    found = [*REPO_ROOT.rglob("Dockerfile"), *REPO_ROOT.rglob("*.Dockerfile"), *REPO_ROOT.rglob("Dockerfile.*")]
    dockerfiles = {path for path in found if path.suffix != ".dockerignore"}  # Dockerfile.dockerignore is no Dockerfile
    return sorted(path for path in dockerfiles if not SKIPPED_DIRS & set(path.relative_to(REPO_ROOT).parts))


def test_the_operator_dockerfile_is_found():
    assert REPO_ROOT / "deploy" / "operator.Dockerfile" in dockerfiles()


@pytest.mark.parametrize("dockerfile", dockerfiles(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_hadolint(dockerfile):
    result = subprocess.run(
        [str(hadolint()), "--no-color", "--failure-threshold", "warning", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_on_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\n")
    result = subprocess.run([str(hadolint()), "--no-color", str(bad)], capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "DL3007" in result.stdout


def _instruction(dockerfile, name: str) -> str:
    lines = [line for line in dockerfile.read_text().splitlines() if line.startswith(name + " ")]
    return lines[-1].removeprefix(name + " ")


def test_operator_image_runs_what_the_deployment_runs(cluster_wide):
    dockerfile = REPO_ROOT / "deploy" / "operator.Dockerfile"
    container = render.one(cluster_wide, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert json.loads(_instruction(dockerfile, "ENTRYPOINT")) == container["command"]
    exposed = {int(port) for port in _instruction(dockerfile, "EXPOSE").split()}
    assert exposed == {port["containerPort"] for port in container["ports"]}
    user = _instruction(dockerfile, "USER").split(":")[0]
    assert (
        int(user) == render.one(cluster_wide, "Deployment")["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    )
