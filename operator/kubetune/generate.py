"""Write (or check) every file derived from the API models: the CRDs in crds/, their copies, the reference."""

from __future__ import annotations

from pathlib import Path

import yaml

from .api.crd import all_crds
from .reference import render_reference

# Copies of the CRDs that install kubetune: the kustomize base (kustomize may not read files above its folder)
# and the Helm chart, whose template adds the crds.install / crds.keep switches around them.
CRD_COPY_DIRS = ("deploy/kustomize/base/crds", "deploy/helm/kubetune/files/crds")

HEADER = "# Generated from operator/kubetune/api by `make generate` (kubetune crds). Do not edit by hand.\n"


def render_yaml(document: dict) -> str:
    """Stable YAML: keys in insertion order, block style, unicode kept."""
    return HEADER + yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=120)


def generated_files() -> dict[str, str]:
    """Relative path (from the repository root) -> content, for every generated file."""
    crds = {name: render_yaml(crd) for name, crd in all_crds().items()}
    files = {f"crds/{name}": content for name, content in crds.items()}
    for folder in CRD_COPY_DIRS:
        files.update({f"{folder}/{name}": content for name, content in crds.items()})
    files["docs/reference.md"] = render_reference()
    return files


def write(root: Path) -> list[str]:
    """Write every generated file under `root`; returns the paths written."""
    written = []
    for relative, content in generated_files().items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
        written.append(relative)
    return written


def stale(root: Path) -> list[str]:
    """Generated files under `root` that are missing or differ from what the models produce now."""
    return [
        relative
        for relative, content in generated_files().items()
        if not (root / relative).is_file() or (root / relative).read_text(encoding="utf-8") != content
    ]
