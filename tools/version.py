"""kubetune's version: read it from its one source, stamp it into the files that cannot import it, check them all.

The source is `__version__` in operator/kubetune/__init__.py. The Python distribution (pyproject.toml, dynamic
version), `kubetune --version`, the operator's default images and its user agent import it. The Helm chart and the
kustomize manifests are YAML that must name the version literally: `set` rewrites them, `check` fails when any
differs (tests/deploy/test_version.py runs it), and `notes` prints a version's CHANGELOG.md section (the release
notes). The release workflow runs `check --tag` so a tag can only release the version the tree says.

    python tools/version.py show | check [--tag vX.Y.Z] | set X.Y.Z | notes [X.Y.Z]
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCE = Path("operator/kubetune/__init__.py")
CHANGELOG = Path("CHANGELOG.md")
# Plain MAJOR.MINOR.PATCH: the one form that Helm (SemVer 2), PEP 440 and image tags all spell the same way.
VERSION_PATTERN = re.compile(r"\d+\.\d+\.\d+")
_SOURCE_LINE = re.compile(r'^__version__ = "(?P<version>[^"]*)"$', re.MULTILINE)
_IMAGES = "ghcr.io/kubetune/kubetune-(?:operator|trainer|server-vllm|server)"


@dataclass(frozen=True)
class Stamp:
    """One place in a file that spells the version: `pattern`'s group `version` is it; `count` places expected."""

    path: Path
    pattern: re.Pattern[str]
    count: int
    what: str


STAMPS = (
    Stamp(
        Path("deploy/helm/kubetune/Chart.yaml"),
        re.compile(r"^version: (?P<version>\S+)$", re.M),
        1,
        "chart version",
    ),
    Stamp(
        Path("deploy/helm/kubetune/Chart.yaml"),
        re.compile(r'^appVersion: "(?P<version>[^"]+)"$', re.M),
        1,
        "chart appVersion (the default image tag)",
    ),
    Stamp(
        Path("deploy/kustomize/base/deployment.yaml"),
        re.compile(rf"\b{_IMAGES}:(?P<version>[^\s@]+)"),
        4,
        "operator, trainer, server and server-vllm image tags",
    ),
    Stamp(
        Path("deploy/kustomize/overlays/cluster-wide/kustomization.yaml"),
        re.compile(r"^    newTag: (?P<version>\S+)$", re.M),
        1,
        "operator image tag",
    ),
)


class VersionError(ValueError):
    """The version is malformed, or a file does not spell it where it should."""


def read_version(root: Path = REPO_ROOT) -> str:
    """The version from its source file."""
    match = _SOURCE_LINE.search((root / SOURCE).read_text(encoding="utf-8"))
    if match is None:
        raise VersionError(f'{SOURCE}: no line `__version__ = "X.Y.Z"`')
    return match["version"]


def validate(version: str) -> str:
    if not VERSION_PATTERN.fullmatch(version):
        raise VersionError(f"{version!r} is not a version of the form MAJOR.MINOR.PATCH (digits only, e.g. 0.2.0)")
    return version


def changelog_section(version: str, root: Path = REPO_ROOT) -> str:
    """The body of `## [version]` in CHANGELOG.md (up to the next `## ` heading), stripped."""
    text = (root / CHANGELOG).read_text(encoding="utf-8")
    heading = re.search(rf"^## \[{re.escape(version)}\][^\n]*\n", text, re.M)
    if heading is None:
        raise VersionError(f"{CHANGELOG}: no section '## [{version}]'")
    following = re.search(r"^## ", text[heading.end() :], re.M)
    body = text[heading.end() : heading.end() + following.start() if following else len(text)].strip()
    if not body:
        raise VersionError(f"{CHANGELOG}: the section '## [{version}]' is empty")
    return body


def problems(root: Path = REPO_ROOT, expected: str | None = None) -> list[str]:
    """Every place that does not spell the source's version (or `expected`), as 'file: what is wrong'."""
    version = read_version(root)
    found: list[str] = []
    if expected is not None and expected != version:
        found.append(f"{SOURCE}: the version is {version}, expected {expected}")
    try:
        validate(version)
    except VersionError as error:
        found.append(f"{SOURCE}: {error}")
    for stamp in STAMPS:
        spelled = [match["version"] for match in stamp.pattern.finditer((root / stamp.path).read_text("utf-8"))]
        if len(spelled) != stamp.count:
            found.append(f"{stamp.path}: expected {stamp.count} place(s) for the {stamp.what}, found {len(spelled)}")
        wrong = sorted({value for value in spelled if value != version})
        if wrong:
            found.append(f"{stamp.path}: the {stamp.what} say {', '.join(wrong)}, not {version}")
    try:
        changelog_section(version, root)
    except VersionError as error:
        found.append(str(error))
    return found


def set_version(new: str, root: Path = REPO_ROOT) -> list[Path]:
    """Write `new` into the source and every stamped place; returns the files changed. CHANGELOG.md is the
    author's: `check` insists on a section for the new version, but nothing here writes one."""
    validate(new)
    source = root / SOURCE
    source.write_text(_SOURCE_LINE.sub(f'__version__ = "{new}"', source.read_text("utf-8")), "utf-8")
    changed = [source]
    for stamp in STAMPS:
        path = root / stamp.path
        text = path.read_text("utf-8")
        stamped = stamp.pattern.sub(lambda match: _replace_group(match, new), text)
        if stamped != text:
            path.write_text(stamped, "utf-8")
            changed.append(path)
    return sorted(set(changed))


def _replace_group(match: re.Match[str], new: str) -> str:
    start, end = match.span("version")
    offset = match.start()
    return match.group(0)[: start - offset] + new + match.group(0)[end - offset :]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/version.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("show", help="print the version")
    check = commands.add_parser("check", help="exit 1 when a file does not spell the version")
    check.add_argument("--tag", help="a git tag (vX.Y.Z) that must name this version")
    bump = commands.add_parser("set", help="write a new version into the source and every stamped file")
    bump.add_argument("version")
    notes = commands.add_parser("notes", help="print a version's CHANGELOG.md section (default: this version)")
    notes.add_argument("version", nargs="?")
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root (default: this checkout)")
    args = parser.parse_args(argv)
    try:
        if args.command == "show":
            print(read_version(args.root))
        elif args.command == "check":
            expected = args.tag.removeprefix("v") if args.tag else None
            found = problems(args.root, expected)
            for problem in found:
                print(problem, file=sys.stderr)
            if found:
                return 1
            print(f"every file says {read_version(args.root)}")
        elif args.command == "set":
            for path in set_version(args.version, args.root):
                print(f"wrote {path.relative_to(args.root)}")
            print(f"now add a '## [{args.version}]' section to {CHANGELOG} (docs/releasing.md)")
        else:
            print(changelog_section(args.version or read_version(args.root), args.root))
    except VersionError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
