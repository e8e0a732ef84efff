"""The GitHub Actions workflows: actionlint (with shellcheck on every `run:` script) finds nothing, and the
workflows do what docs/releasing.md promises: pull requests run `make lint` and `make test`; a version tag is checked
against the tree, builds and pushes the four images of this repository (the vLLM server's too) for their platforms
with an SBOM, signs them keyless, publishes the chart with all four digests pinned and writes the release notes from
CHANGELOG.md."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubetune
import pytest
import yaml

from tests.support.binaries import REPO_ROOT, kubectl
from tools import pin_digests

WORKFLOWS = REPO_ROOT / ".github" / "workflows"
BIN = Path(sys.executable).parent


def _tool(name: str) -> Path:
    path = BIN / name
    if not path.is_file():
        pytest.fail(f"{name} is missing: install the dev extra (.venv/bin/pip install -e '.[dev]'; make setup does)")
    return path


def actionlint(*files: Path) -> subprocess.CompletedProcess:
    command = [str(_tool("actionlint")), "-no-color", "-shellcheck", str(_tool("shellcheck")), *map(str, files)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)


def _load(name: str) -> dict:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))  # YAML 1.1 reads the key `on` as true
    return workflow


def _runs(workflow: dict) -> str:
    return "\n".join(step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"])


def _uses(job: dict) -> list[str]:
    return [step["uses"].split("@")[0] for step in job["steps"] if "uses" in step]


def test_actionlint_finds_nothing():
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {path.name for path in files} >= {"ci.yml", "release.yml"}
    result = actionlint(*files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_would_catch_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - run: echo ${{ matrix.missing }}\n      - run: cd $UNSET_DIR && ls `pwd`\n"
    )
    result = actionlint(broken)
    assert result.returncode == 1
    assert 'property "missing" is not defined' in result.stdout
    assert "shellcheck reported issue" in result.stdout, "shellcheck must run on the scripts"


def test_pull_requests_run_make_lint_and_make_test():
    ci = _load("ci.yml")
    assert "pull_request" in ci["on"]
    runs = _runs(ci)
    assert "make lint" in runs and "make test" in runs
    test_env = ci["jobs"]["test"]["env"]
    assert test_env["KUBETUNE_REQUIRE_ENVTEST"] == test_env["KUBETUNE_REQUIRE_IMAGES"] == "1", "no silent skips"


def test_a_version_tag_releases_the_repositorys_images_signed_with_sboms():
    release = _load("release.yml")
    assert release["on"] == {"push": {"tags": ["v[0-9]+.[0-9]+.[0-9]+"]}}
    runs = _runs(release)
    assert 'tools/version.py check --tag "$GITHUB_REF_NAME"' in runs
    images = release["jobs"]["images"]
    assert images["permissions"]["id-token"] == "write", "keyless signing needs the workflow's OIDC token"
    matrix = {entry["image"]: entry for entry in images["strategy"]["matrix"]["include"]}
    assert {name: entry["platforms"] for name, entry in matrix.items()} == {
        "operator": "linux/amd64,linux/arm64",
        "trainer": "linux/amd64",
        "server": "linux/amd64",
        "server-vllm": "linux/amd64",
    }
    dockerfiles = {"operator": "deploy/operator.Dockerfile", "trainer": "trainer-image/Dockerfile"}
    dockerfiles["server"] = "server-image/Dockerfile"
    dockerfiles["server-vllm"] = "server-image/Dockerfile.vllm"
    assert {name: entry["dockerfile"] for name, entry in matrix.items()} == dockerfiles
    assert all((REPO_ROOT / path).is_file() for path in dockerfiles.values())
    build = next(step for step in images["steps"] if step.get("uses", "").startswith("docker/build-push-action"))
    assert build["with"]["push"] is True and build["with"]["sbom"] is True
    assert "cosign sign --yes" in runs and "cosign attest --yes --type spdxjson" in runs
    conditional = [step.get("name", step.get("uses")) for step in images["steps"] if "if" in step]
    assert all("room" in name.lower() for name in conditional), (
        f"every image is built, signed and attested: {conditional}"
    )


def test_the_chart_and_install_yaml_are_published_with_pinned_digests_and_notes_from_the_changelog():
    release = _load("release.yml")
    runs = _runs(release)
    assert "tools/pin_digests.py values deploy/helm/kubetune/values.yaml" in runs
    assert "tools/pin_digests.py manifests dist/install.yaml" in runs
    assert 'helm push "dist/kubetune-$VERSION.tgz" "oci://$REGISTRY/charts"' in runs
    assert 'python tools/version.py notes "$VERSION"' in runs
    assert "gh release create" in runs
    assert release["jobs"]["release"]["permissions"] == {"contents": "write"}
    assert release["permissions"] == {"contents": "read"}, "jobs widen their own rights, nothing else gets them"


def test_every_released_image_is_pinned_in_the_chart_and_listed_in_the_notes():
    """The images the matrix pushes are the images tools/pin_digests.py pins and the release notes list."""
    release = _load("release.yml")
    pushed = [entry["image"] for entry in release["jobs"]["images"]["strategy"]["matrix"]["include"]]
    assert tuple(pushed) == pin_digests.IMAGES
    pin = next(step["run"] for step in release["jobs"]["chart"]["steps"] if "pin_digests.py" in step.get("run", ""))
    for image in pushed:
        assert f'--{image} "$(cat images/{image}.digest)"' in pin, f"the chart and install.yaml must pin {image}"
    notes = next(
        step["run"] for step in release["jobs"]["release"]["steps"] if "version.py notes" in step.get("run", "")
    )
    listed = re.search(r"for image in ([\w\s-]+?); do", notes)
    assert listed and listed.group(1).split() == pushed, "the release notes list every pushed image with its digest"


def _step_script(job: dict, marker: str) -> str:
    return next(step["run"] for step in job["steps"] if marker in step.get("run", ""))


def _run_as_actions(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """A `run:` script the way GitHub Actions runs it on Linux (`bash --noprofile --norc -eo pipefail`)."""
    command = ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_the_release_scripts_pin_and_list_all_four_images(tmp_path):
    """The chart job's pin step and the release notes step, run on a scratch checkout with a digest artifact per
    image: every image's digest lands in values.yaml, in install.yaml and in the notes."""
    from . import render

    release = _load("release.yml")
    digests = {image: "sha256:" + f"{index + 1:x}" * 64 for index, image in enumerate(pin_digests.IMAGES)}
    for folder in ("deploy", "tools", "operator/kubetune"):
        shutil.copytree(
            REPO_ROOT / folder, tmp_path / folder, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(REPO_ROOT / "CHANGELOG.md", tmp_path / "CHANGELOG.md")
    for folder in ("images", "assets"):
        (tmp_path / folder).mkdir()
        for image, digest in digests.items():
            (tmp_path / folder / f"{image}.digest").write_text(digest + "\n")
    (tmp_path / "assets" / "chart.digest").write_text("sha256:" + "0" * 64 + "\n")
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "python").symlink_to(sys.executable)
    (tools / "kubectl").symlink_to(kubectl())
    env = {**os.environ, "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}", "REGISTRY": "ghcr.io/kubetune"}
    env["VERSION"] = kubetune.__version__

    pinned = _run_as_actions(_step_script(release["jobs"]["chart"], "pin_digests.py"), tmp_path, env)
    assert pinned.returncode == 0, pinned.stderr
    values = yaml.safe_load((tmp_path / "deploy/helm/kubetune/values.yaml").read_text())
    chart_digests = {name: values[name]["image"]["digest"] for name in ("operator", "trainer", "server")}
    chart_digests["server-vllm"] = values["server"]["vllmImage"]["digest"]
    assert chart_digests == digests
    installed = render.operator_images(render.parse_documents((tmp_path / "dist/install.yaml").read_text()))
    assert {name: image.rsplit("@", 1)[1] for name, image in installed.items()} == digests

    notes = _run_as_actions(_step_script(release["jobs"]["release"], "version.py notes"), tmp_path, env)
    assert notes.returncode == 0, notes.stderr
    text = (tmp_path / "notes.md").read_text()
    for image, digest in digests.items():
        assert f"`ghcr.io/kubetune/kubetune-{image}:{kubetune.__version__}@{digest}`" in text
