"""Command-line wiring of the local runner (`kubetune run --local`) and the demo (`kubetune demo`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kubetune.api.runtime import TrainerExit

from .documents import DocumentError
from .serve import ServeFailed
from .train import TrainingFailed
from .volumes import parse_binding


def exit_code_of(error: TrainingFailed) -> int:
    """The trainer's own exit code (64 invalid input, 65 model not loadable, 66 out of memory, 67 output locked,
    1 other), so scripts can tell a data error from a crash as the operator does; a trainer killed by signal N
    gives 128 + N, as a shell reports it."""
    if error.code < 0:
        return 128 - error.code
    return error.code or 1


def _run(args: argparse.Namespace) -> int:
    from .runner import LocalRun

    if not args.local:
        print("kubetune run needs --local (to run on a cluster, kubectl apply the same files)", file=sys.stderr)
        return 2
    try:
        claims = [parse_binding(text, "--volume") for text in args.volume]
        configmaps = [parse_binding(text, "--configmap") for text in args.configmap]
        with LocalRun(
            files=[Path(f) for f in args.files],
            workdir=Path(args.workdir),
            claims=claims,
            configmaps=configmaps,
            port=args.port,
        ) as run:
            run.train_all()
            if args.no_serve or not run.bundle.serves:
                return 0
            run.serve_all()
            print("serving; press Ctrl-C to stop")
            run.wait()
    except TrainingFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return exit_code_of(error)
    except DocumentError as error:
        print(f"error: {error}", file=sys.stderr)
        return int(TrainerExit.INVALID_INPUT)  # an invalid FineTuneJob is invalid input, as it is for the trainer
    except (ServeFailed, ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 130
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    try:
        return run_demo(Path(args.workdir), args.port)
    except TrainingFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return exit_code_of(error)
    except (ServeFailed, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def add_commands(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("run", help="run FineTuneJobs (and serve ModelServes) from YAML files")
    run.add_argument("files", nargs="+", help="YAML files, as you would kubectl apply them")
    run.add_argument("--local", action="store_true", help="run on this machine (no cluster, no Docker)")
    run.add_argument("--workdir", default=".kubetune", help="folder for volumes, logs and runs (default .kubetune)")
    run.add_argument(
        "--volume",
        action="append",
        default=[],
        metavar="CLAIM=DIR",
        help="let PersistentVolumeClaim CLAIM be the folder DIR (repeatable)",
    )
    run.add_argument(
        "--configmap",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="let ConfigMap NAME hold one key per file of DIR (repeatable)",
    )
    run.add_argument("--port", type=int, default=8000, help="first local port for servers (default 8000)")
    run.add_argument("--no-serve", action="store_true", help="train only")
    run.set_defaults(handler=_run)
    demo = commands.add_parser("demo", help="fine-tune and serve a small real model on the bundled data")
    demo.add_argument("--workdir", default=".kubetune", help="folder for the model cache, volumes and logs")
    demo.add_argument("--port", type=int, default=8000, help="local port of the demo server")
    demo.set_defaults(handler=_demo)
