"""Build kubetune's three images with buildah and run them as a container runtime would, without a Docker engine.

Facts behind this (../shared/testing-images.md): registries other than PyPI/Debian are unreachable, so the base is
made locally: Debian bookworm with its python3 (3.11, the Python of the images' default base
python:3.11-slim-bookworm) by mmdebstrap, imported into buildah's storage. The Dockerfiles take it as their BASE
build argument; torch comes from requirements/torch.txt as in a release build, the wheel being the CPU build of that
version that this machine's pip resolves (the venv's torch), handed to the build in a folder (PIP_FIND_LINKS).

Caching, so that only the first run on a machine pays: everything lives under KUBETUNE_IMAGE_CACHE (default
~/.cache/kubetune/images; CI can keep it between runs): the base's root filesystem tarball keyed by suite and
packages, the torch wheel keyed by the pin, and buildah's storage, whose layer cache (`bud --layers`) rebuilds
only from the first instruction whose inputs changed (the Dockerfiles order torch, dependencies, code).

Running: `podman run` cannot start containers here (crun's setrlimit is refused) and `buildah run` cannot make the
root filesystem read-only, so `run` does what a runtime does, with util-linux and coreutils: a private mount and PID
namespace (`unshare`), the container's root filesystem bind-mounted (read-only if asked), /proc, /dev, a tmpfs at
/tmp if asked, the volumes, then `chroot --userspec` into it and exec the image's entrypoint with the image's
environment and working directory (from `buildah inspect`). The network is the host's, as in a pod with hostNetwork.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from tests.support.binaries import REPO_ROOT

CACHE = Path(os.environ.get("KUBETUNE_IMAGE_CACHE") or Path.home() / ".cache" / "kubetune" / "images")
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
DEBIAN_MIRROR = os.environ.get("KUBETUNE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
TORCH_PIN = REPO_ROOT / "requirements" / "torch.txt"
HOW_TO_GET = (
    "the image tests need buildah, mmdebstrap and unshare, as root: "
    "apt-get install buildah mmdebstrap debian-archive-keyring (Debian/Ubuntu; .ci/run installs them)"
)
BUILD_TIMEOUT = 1800


@dataclass(frozen=True)
class Dockerfile:
    """One of the repository's images: its Dockerfile and the ignore file that limits its build context."""

    name: str
    path: Path

    @property
    def ignorefile(self) -> Path:
        return self.path.with_name(self.path.name + ".dockerignore")


DOCKERFILES = {
    "operator": Dockerfile("operator", REPO_ROOT / "deploy" / "operator.Dockerfile"),
    "trainer": Dockerfile("trainer", REPO_ROOT / "trainer-image" / "Dockerfile"),
    "server": Dockerfile("server", REPO_ROOT / "server-image" / "Dockerfile"),
}


def missing_tools() -> list[str]:
    """The programs the image tests need that this machine lacks (building needs root: buildah's chroot)."""
    missing = [tool for tool in ("buildah", "mmdebstrap", "unshare", "chroot") if shutil.which(tool) is None]
    if os.geteuid() != 0:
        missing.append("root")
    return missing


@dataclass
class Timings:
    """Seconds spent per step, for the session's summary line."""

    steps: dict[str, float] = field(default_factory=dict)

    def add(self, step: str, seconds: float) -> None:
        self.steps[step] = self.steps.get(step, 0.0) + seconds

    def line(self) -> str:
        total = sum(self.steps.values())
        return f"images: {total:.0f} s (" + ", ".join(f"{k} {v:.1f} s" for k, v in self.steps.items()) + ")"


TIMINGS = Timings()


class ImageError(AssertionError):
    """buildah or a container failed; carries the command's output so the test failure says why."""


class Buildah:
    """buildah on a storage of its own under CACHE (overlay where the kernel allows it, else vfs)."""

    def __init__(self, cache: Path = CACHE) -> None:
        self.cache = cache
        self.cache.mkdir(parents=True, exist_ok=True)
        self.driver = os.environ.get("KUBETUNE_BUILDAH_DRIVER", "overlay")
        if "KUBETUNE_BUILDAH_DRIVER" not in os.environ:
            try:  # overlay needs kernel support inside this machine; vfs always works (it copies every layer)
                self("rm", self("from", "scratch").strip())
            except ImageError:
                self.driver = "vfs"

    def command(self, *args: str) -> list[str]:
        return [
            "buildah",
            "--root",
            str(self.cache / f"storage-{self.driver}"),
            "--runroot",
            str(self.cache / f"run-{self.driver}"),
            "--storage-driver",
            self.driver,
            *args,
        ]

    def __call__(self, *args: str, timeout: float = 300) -> str:
        result = subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise ImageError(
                f"{shlex.join(self.command(*args))} failed ({result.returncode}):\n{result.stderr[-4000:]}"
            )
        return result.stdout

    def has_image(self, name: str) -> bool:
        result = subprocess.run(self.command("inspect", "--type", "image", name), capture_output=True, check=False)
        return result.returncode == 0


def _key(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def base_image(buildah: Buildah) -> str:
    """localhost/kubetune-test-base: Debian `SUITE` minbase with BASE_PACKAGES, made once per cache."""
    key = _key(SUITE, *BASE_PACKAGES)
    name = f"localhost/kubetune-test-base:{SUITE}-{key}"
    if buildah.has_image(name):
        return name
    started = time.monotonic()
    tarball = buildah.cache / f"rootfs-{SUITE}-{key}.tar"
    if not tarball.is_file():
        staging = tarball.with_suffix(".partial")
        command = ["mmdebstrap", "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES)]
        if DEBIAN_KEYRING.is_file():  # given explicitly, so a non-Debian host (an Ubuntu CI runner) works too
            command.append(f"--keyring={DEBIAN_KEYRING}")
        command += [SUITE, str(staging), DEBIAN_MIRROR]
        result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
        if result.returncode != 0:
            raise ImageError(f"{shlex.join(command)} failed:\n{result.stderr[-4000:]}")
        staging.rename(tarball)
    container = buildah("from", "scratch").strip()
    try:
        buildah("add", container, str(tarball), "/", timeout=600)
        buildah("commit", "--quiet", container, name, timeout=600)
    finally:
        buildah("rm", container)
    TIMINGS.add("base", time.monotonic() - started)
    return name


def torch_wheelhouse(cache: Path = CACHE) -> Path:
    """A folder holding the wheel of the pinned torch that this machine's pip resolves (the venv's: a CPU build).

    Asking pip (with the machine's own configuration) is what makes it the same wheel `make setup` installed."""
    pin = TORCH_PIN.read_text()
    folder = cache / f"wheels-{_key(pin)}"
    if not any(folder.glob("torch-*.whl")):
        staging = folder.with_suffix(".partial")
        shutil.rmtree(staging, ignore_errors=True)
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-r", str(TORCH_PIN)]
        result = subprocess.run([*command, "-d", str(staging)], capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            raise ImageError(f"pip download of {TORCH_PIN} failed:\n{result.stderr[-4000:]}")
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    return folder


@dataclass(frozen=True)
class Image:
    """A built image and what it declares."""

    name: str
    label: str
    entrypoint: list[str]
    user: str
    env: dict[str, str]
    workdir: str
    build_seconds: float


def build(buildah: Buildah, dockerfile: Dockerfile, base: str) -> Image:
    """`buildah bud` of one Dockerfile from the repository root on the test base, with the layer cache."""
    name = f"localhost/kubetune-{dockerfile.name}:test"
    wheels = torch_wheelhouse(buildah.cache)
    started = time.monotonic()
    buildah(
        "bud",
        "--isolation",
        "chroot",
        "--network",
        "host",
        "--layers",
        "--volume",
        "/etc/ssl/certs:/etc/ssl/certs:ro",  # pip inside the build reaches PyPI only with the host's CA bundle
        "--volume",
        f"{wheels}:/wheels:ro",
        "--build-arg",
        f"BASE={base}",
        "--build-arg",
        "PIP_FIND_LINKS=/wheels",
        "--ignorefile",
        str(dockerfile.ignorefile),
        "--file",
        str(dockerfile.path),
        "--tag",
        name,
        str(REPO_ROOT),
        timeout=BUILD_TIMEOUT,
    )
    seconds = time.monotonic() - started
    TIMINGS.add(f"{dockerfile.name} build", seconds)
    config = json.loads(buildah("inspect", "--type", "image", name))["OCIv1"]["config"]
    env = dict(item.split("=", 1) for item in config.get("Env", []))
    return Image(
        name,
        dockerfile.name,
        config["Entrypoint"],
        config.get("User", ""),
        env,
        config.get("WorkingDir") or "/",
        seconds,
    )


@dataclass(frozen=True)
class Mount:
    """A host folder or file at `target` in the container."""

    source: Path
    target: str
    read_only: bool = True


# Runs inside `unshare --mount --pid --fork`: $1 the container's root filesystem, $2 a private mount point for it,
# $3 "ro" or "rw", $4 "tmp" for a tmpfs at /tmp, $5 the mounts as "source<TAB>target<TAB>ro|rw" lines, then the
# chroot arguments. Mount points are made in the container's own (writable) layer before it turns read-only.
_RUNTIME = r"""
set -eu
rootfs=$1 root=$2 mode=$3 tmp=$4 mounts=$5
shift 5
printf '%s\n' "$mounts" | while IFS="$(printf '\t')" read -r source target access; do
    [ -n "$source" ] || continue
    case "$(realpath -m "$rootfs$target")" in
        "$rootfs"/*) ;;
        *) echo "mount target $target leaves the container through a symbolic link" >&2; exit 1 ;;
    esac
    if [ -d "$source" ]; then mkdir -p "$rootfs$target"
    else mkdir -p "$(dirname "$rootfs$target")" && touch "$rootfs$target"; fi
done
mount --bind "$rootfs" "$root"
if [ "$mode" = ro ]; then mount -o remount,bind,ro "$root"; fi
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
if [ "$tmp" = tmp ]; then mount -t tmpfs -o mode=1777,size=64m tmpfs "$root/tmp"; fi
printf '%s\n' "$mounts" | while IFS="$(printf '\t')" read -r source target access; do
    [ -n "$source" ] || continue
    mount --bind "$source" "$root$target"
    if [ "$access" = ro ]; then mount -o remount,bind,ro "$root$target"; fi
done
exec chroot "$@"
"""


@dataclass
class Running:
    """A container process started in the background. Its entry point is PID 1 of its own PID namespace, a child of
    `unshare`; signals go to it (chroot's change of user clears a parent-death signal, so none is inherited)."""

    process: subprocess.Popen

    def _init_pid(self) -> int | None:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            pids = children.read_text().split()
        except OSError:
            return None
        return int(pids[0]) if pids else None

    def signal(self, number: int) -> None:
        pid = self._init_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, number)

    def stop(self, grace: float = 60) -> int:
        """SIGTERM, as a kubelet; SIGKILL after `grace` seconds. Returns the exit code."""
        self.signal(signal.SIGTERM)
        try:
            return self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)  # PID 1 of the namespace: every process in it dies
            return self.process.wait(30)

    def output(self) -> str:
        """What it printed (call after it exited)."""
        return self.process.stdout.read() if self.process.stdout else ""


class Container:
    """A working container of an image: `start` runs a process in it as the image declares (or as overridden)."""

    def __init__(self, buildah: Buildah, image: Image) -> None:
        self.buildah, self.image = buildah, image
        self.id = buildah("from", "--pull-never", image.name).strip()
        self.rootfs = buildah("mount", self.id).strip()
        self.mountpoint = Path(buildah.cache) / "mnt" / self.id
        self.mountpoint.mkdir(parents=True, exist_ok=True)

    def command(
        self,
        args: Sequence[str] = (),
        *,
        entrypoint: Sequence[str] | None = None,
        user: str | None = None,
        env: dict[str, str] | None = None,
        mounts: Sequence[Mount] = (),
        read_only: bool = False,
        tmpfs_tmp: bool = False,
    ) -> list[str]:
        """The host command that runs `entrypoint + args` (default: the image's) in this container as `user`
        (default: the image's USER), with the image's environment updated by `env`."""
        user = user if user is not None else self.image.user
        uid, _, gid = (user or "0").partition(":")
        environment = {**self.image.env, **(env or {})}
        table = "\n".join(f"{m.source}\t{m.target}\t{'ro' if m.read_only else 'rw'}" for m in mounts)
        chroot = [f"--userspec={uid}:{gid or uid}", str(self.mountpoint), "/usr/bin/env", "-i"]
        chroot += ["-C", self.image.workdir, *(f"{k}={v}" for k, v in environment.items())]
        chroot += [*(entrypoint if entrypoint is not None else self.image.entrypoint), *args]
        return [
            "unshare",
            "--mount",
            "--pid",
            "--fork",
            "sh",
            "-c",
            _RUNTIME,
            "runtime",
            self.rootfs,
            str(self.mountpoint),
            "ro" if read_only else "rw",
            "tmp" if tmpfs_tmp else "",
            table,
            *chroot,
        ]

    def run(self, args: Sequence[str] = (), timeout: float = 600, **options: Any) -> subprocess.CompletedProcess:
        """Run to the end; stdout and stderr captured."""
        started = time.monotonic()
        result = subprocess.run(self.command(args, **options), capture_output=True, text=True, timeout=timeout)
        TIMINGS.add(f"{self.image.label} runs", time.monotonic() - started)
        return result

    def start(self, args: Sequence[str] = (), **options: Any) -> Running:
        """Start in the background (stdout and stderr together in `process.stdout`)."""
        command = self.command(args, **options)
        return Running(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))

    def remove(self) -> None:
        self.buildah("umount", self.id)
        self.buildah("rm", self.id)
        shutil.rmtree(self.mountpoint, ignore_errors=True)


@cache
def session_buildah() -> Buildah:
    """One Buildah per test session (the storage driver probe runs once)."""
    return Buildah()


@cache
def built(name: str) -> Image:
    """The image `name` (operator, trainer, server) built once per session on the test base."""
    buildah = session_buildah()
    return build(buildah, DOCKERFILES[name], base_image(buildah))
