"""Render the install manifests with the real tools: `kubectl kustomize` and `helm template` / `helm lint`."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tests.support.binaries import REPO_ROOT, helm_env, kubectl
from tests.support.binaries import helm as helm_binary

DEPLOY = REPO_ROOT / "deploy"
KUSTOMIZE = DEPLOY / "kustomize"
OVERLAYS = KUSTOMIZE / "overlays"
CHART = DEPLOY / "helm" / "kubetune"
RELEASE = "kubetune"
NAMESPACE = "kubetune"

Manifest = dict[str, Any]


class RenderError(AssertionError):
    """A tool refused to render; carries its stderr so the test failure says why."""


def _run(command: list[str], env: dict[str, str] | None = None) -> str:
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    if result.returncode != 0:
        raise RenderError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr}")
    return result.stdout


def parse_documents(text: str) -> list[Manifest]:
    return [document for document in yaml.safe_load_all(text) if document]


def kustomize(folder: Path) -> list[Manifest]:
    """`kubectl kustomize FOLDER`, parsed."""
    return parse_documents(_run([str(kubectl()), "kustomize", str(folder)]))


def kustomizations(root: Path = DEPLOY) -> list[Path]:
    """Every folder under deploy/ that kustomize can build on its own (overlays and examples, not components)."""
    folders = sorted(path.parent for path in root.rglob("kustomization.yaml"))
    return [folder for folder in folders if folder.name != "watched-namespace" and folder.parent.name != "namespaces"]


def _values_file(values: dict[str, Any], scratch: Path) -> Path:
    path = scratch / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def helm_template(values: dict[str, Any] | None = None, include_crds: bool = True) -> list[Manifest]:
    """`helm template kubetune deploy/helm/kubetune -n kubetune -f VALUES [--include-crds]`, parsed."""
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        command = [str(helm_binary()), "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
        command += ["--values", str(_values_file(values or {}, scratch))]
        if include_crds:
            command.append("--include-crds")
        return parse_documents(_run(command, env=helm_env(scratch)))


def helm_lint(values: dict[str, Any] | None = None) -> str:
    """`helm lint --strict` with the given values; returns its output (raises when it fails)."""
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        command = [
            str(helm_binary()),
            "lint",
            "--strict",
            str(CHART),
            "--values",
            str(_values_file(values or {}, scratch)),
        ]
        return _run(command, env=helm_env(scratch))


def by_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [manifest for manifest in manifests if manifest["kind"] == kind]


def one(manifests: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    """The single object of `kind` (and `name`); fails listing what there is otherwise."""
    found = [m for m in by_kind(manifests, kind) if name is None or m["metadata"]["name"] == name]
    if len(found) != 1:
        present = sorted(f"{m['kind']}/{m['metadata']['name']}" for m in manifests)
        raise AssertionError(f"expected one {kind} {name or ''}, found {len(found)} among {present}")
    return found[0]


def operator_images(manifests: list[Manifest]) -> dict[str, str]:
    """The images an install runs: the operator's own, and the trainer, server and vLLM server images it hands to its
    children (named as tools/pin_digests.py names them)."""
    container = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item.get("value") for item in container["env"]}
    return {
        "operator": container["image"],
        "trainer": env["KUBETUNE_TRAINER_IMAGE"],
        "server": env["KUBETUNE_SERVER_IMAGE"],
        "server-vllm": env["KUBETUNE_SERVER_VLLM_IMAGE"],
    }


def helm(*arguments: str) -> str:
    """Any helm command with a private cache/config folder; returns stdout (raises when it fails)."""
    with tempfile.TemporaryDirectory() as scratch_dir:
        return _run([str(helm_binary()), *arguments], env=helm_env(Path(scratch_dir)))
