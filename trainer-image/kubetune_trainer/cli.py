"""`python -m kubetune_trainer`: run the flow, map any failure to its exit code, leave a termination message."""

from __future__ import annotations

import logging
import os
import sys

from kubetune.api.runtime import EXIT_REASONS, TrainerExit

from .errors import exit_code_for
from .settings import parse_args
from .termination import write_termination_message

log = logging.getLogger("kubetune_trainer")


def configure_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("KUBETUNE_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 ok, 64 bad spec/data, 65 model load, 66 out of memory, 67 output locked, 68 network error after
    retries, 69 preempted (SIGTERM, checkpoint saved), 1 anything else."""
    configure_logging()
    # Tokenizer threads fork badly with data loader workers; the trainer parallelises elsewhere.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args(argv)
    from .flow import quiet_progress_bars, run  # heavy imports (torch, trl) only once the arguments parse

    quiet_progress_bars()

    try:
        summary = run(args)
    except Exception as error:  # every failure ends here so it gets an exit code and a termination message
        code = exit_code_for(error)
        if code == TrainerExit.ERROR:
            log.exception("training failed")
        else:
            log.error("training failed (%s): %s", EXIT_REASONS[code], error)
        write_termination_message({"exitReason": EXIT_REASONS[code], "exitCode": int(code), "message": str(error)})
        return int(code)
    if summary:
        write_termination_message(summary)
    return int(TrainerExit.OK)
