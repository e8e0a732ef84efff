"""Local stand-ins for PersistentVolumeClaims and ConfigMaps: folders under one work directory.

The images resolve `<root>/<claimName>/<path>` (see kubetune.api.runtime); locally each claim is a folder
under `<workdir>/volumes`, or a symlink to a folder the user named with `--volume CLAIM=DIR`.
"""

from __future__ import annotations

import os
from pathlib import Path

from kubetune.api.runtime import ENV_CONFIGMAP_ROOT, ENV_PVC_ROOT


class LocalVolumes:
    """Claims and ConfigMaps of one local run."""

    def __init__(self, workdir: Path) -> None:
        self.pvc_root = (workdir / "volumes").resolve()
        self.configmap_root = (workdir / "configmaps").resolve()
        self.pvc_root.mkdir(parents=True, exist_ok=True)
        self.configmap_root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _bind(link: Path, target: Path, what: str) -> None:
        target = target.resolve()
        if not target.is_dir():
            raise FileNotFoundError(f"{what}: {target} is not a folder")
        if link.is_symlink() or link.is_file():
            link.unlink()
        elif link.is_dir():
            raise FileExistsError(f"{what}: {link} already holds data; remove it or pick another name")
        link.symlink_to(target, target_is_directory=True)

    def bind_claim(self, claim: str, folder: Path) -> None:
        """Make claim `claim` show the contents of `folder`."""
        self._bind(self.pvc_root / claim, Path(folder), f"--volume {claim}")

    def bind_configmap(self, name: str, folder: Path) -> None:
        """Make ConfigMap `name` hold one key per file of `folder` (as `kubectl create configmap --from-file`)."""
        self._bind(self.configmap_root / name, Path(folder), f"--configmap {name}")

    def claim(self, claim: str) -> Path:
        path = self.pvc_root / claim
        if not path.exists():
            path.mkdir(parents=True)
        return path

    def env(self) -> dict[str, str]:
        return {ENV_PVC_ROOT: str(self.pvc_root), ENV_CONFIGMAP_ROOT: str(self.configmap_root)}


def parse_binding(text: str, flag: str) -> tuple[str, Path]:
    """`NAME=DIR` -> (NAME, DIR) with a clear error for anything else."""
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise ValueError(f"{flag} expects NAME=DIR, got {text!r}")
    return name, Path(os.path.expanduser(folder))
