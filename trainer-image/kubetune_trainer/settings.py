"""Where the spec and the output folder are: command-line flags first, then the `KUBETUNE_*` environment."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from kubetune.api import FineTuneJobSpec, format_validation_error
from kubetune.api.runtime import DEFAULT_OUTPUT, ENV_OUTPUT, ENV_SPEC, SPEC_DIR, SPEC_FILE
from pydantic import ValidationError

from .errors import InvalidInputError


@dataclass(frozen=True)
class TrainerArgs:
    """The two inputs of a trainer run."""

    spec_path: Path
    output_dir: Path


def parse_args(argv: list[str] | None = None) -> TrainerArgs:
    """Read `--spec` and `--output`; each falls back to its env variable, then to the pod default."""
    parser = argparse.ArgumentParser(
        prog="python -m kubetune_trainer",
        description="Fine-tune a LoRA/QLoRA adapter as described by a FineTuneJob spec (JSON, camelCase).",
    )
    parser.add_argument(
        "--spec",
        default=os.environ.get(ENV_SPEC, f"{SPEC_DIR}/{SPEC_FILE}"),
        help=f"FineTuneJob spec file (env {ENV_SPEC}; default {SPEC_DIR}/{SPEC_FILE})",
    )
    parser.add_argument(
        "--output",
        default=os.environ.get(ENV_OUTPUT, DEFAULT_OUTPUT),
        help=f"output folder for checkpoints, adapter and metrics (env {ENV_OUTPUT}; default {DEFAULT_OUTPUT})",
    )
    args = parser.parse_args(argv)
    return TrainerArgs(spec_path=Path(args.spec), output_dir=Path(args.output))


def load_spec(path: Path) -> FineTuneJobSpec:
    """Parse the spec file, turning every problem into an InvalidInputError that names the field."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InvalidInputError(f"cannot read the spec file {path}: {error.strerror or error}") from error
    try:
        return FineTuneJobSpec.model_validate_json(text)
    except ValidationError as error:
        raise InvalidInputError(f"invalid spec in {path}: {format_validation_error(error, 'spec')}") from error
