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


def test_every_image_dockerfile_is_found():
    """hadolint covers each image, the vLLM server image too (built only where vLLM's CUDA base can be pulled:
    `make image-vllm`, never in the suite)."""
    names = ("deploy/operator.Dockerfile", "trainer-image/Dockerfile", "server-image/Dockerfile")
    assert {REPO_ROOT / name for name in (*names, "server-image/Dockerfile.vllm")} <= set(dockerfiles())


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
    pod_context = render.one(cluster_wide, "Deployment")["spec"]["template"]["spec"]["securityContext"]
    # runAsNonRoot is checked by the kubelet against the image's numeric USER; no runAsUser, so that OpenShift's
    # restricted-v2 can assign its own UID.
    assert int(user) > 0 and pod_context["runAsNonRoot"] is True and "runAsUser" not in pod_context


def test_one_torch_pin_for_the_tests_and_the_images():
    """requirements/torch.txt is the only place torch's version is written: `make setup` installs the venv's torch
    from it and the trainer and server images install theirs from it (tests/images checks the built image's)."""
    import importlib.metadata

    pin = (REPO_ROOT / "requirements" / "torch.txt").read_text()
    [version] = [line.removeprefix("torch==") for line in pin.splitlines() if line.startswith("torch==")]
    assert importlib.metadata.version("torch").split("+")[0] == version, "the venv's torch is the pinned one"
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "TORCH_PIN := requirements/torch.txt" in makefile and "TORCH     ?= -r $(TORCH_PIN)" in makefile
    for dockerfile in ("trainer-image/Dockerfile", "server-image/Dockerfile"):
        assert "pip install --no-compile -r requirements/torch.txt" in (REPO_ROOT / dockerfile).read_text()
    written = [path for path in dockerfiles() if f"torch=={version}" in path.read_text()]
    assert written == [], "a Dockerfile names torch's version itself"


def test_the_operator_image_user_has_a_name():
    """kopf names its peering identity after the user (getpass.getuser()); a bare uid makes the operator crash at
    startup. tests/images and tests/cluster/test_operator_image.py run the image for real."""
    text = (REPO_ROOT / "deploy" / "operator.Dockerfile").read_text()
    user = _instruction(REPO_ROOT / "deploy" / "operator.Dockerfile", "USER").split(":")[0]
    assert f"useradd --uid {user} " in text
    assert "USER=kubetune" in text, "an arbitrary UID (OpenShift) has no passwd entry: getpass reads $USER first"
