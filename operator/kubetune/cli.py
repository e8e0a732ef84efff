"""The `kubetune` command line: regenerate CRDs, run jobs locally, run the demo, fetch a job's results."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__, generate, results
from .local import cli as local_cli
from .operator import cli as operator_cli


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def _crds(args: argparse.Namespace) -> int:
    root = Path(args.root) if args.root else _repo_root()
    if args.check:
        differing = generate.stale(root)
        if differing:
            print("out of date: " + ", ".join(differing) + " - run make generate", file=sys.stderr)
            return 1
        print("generated files are up to date")
        return 0
    for path in generate.write(root):
        print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubetune", description=__doc__)
    parser.add_argument("--version", action="version", version=f"kubetune {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    crds = commands.add_parser("crds", help="regenerate crds/ from the API models")
    crds.add_argument("--check", action="store_true", help="exit 1 when the files on disk differ")
    crds.add_argument("--root", help="repository root to write into (default: this checkout)")
    crds.set_defaults(handler=_crds)
    local_cli.add_commands(commands)
    operator_cli.add_commands(commands)
    results.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
