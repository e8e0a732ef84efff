"""`python -m kubetune_trainer.launch`: the trainer container's entry.

One process per GPU and one pod per node: with KUBETUNE_PROCS_PER_NODE > 1 or KUBETUNE_NODES > 1 (set by the
operator from resources.gpus and resources.nodes) this runs torchrun (torch.distributed.run) around
`python -m kubetune_trainer`: `--standalone` on one node, else a static rendezvous at node 0
(KUBETUNE_MASTER_ADDR, the first pod of the Indexed Job behind its headless Service) with the node rank from
the Job's completion index. Otherwise it is the trainer itself. A failed rank's exit code (64 bad input, 66 out
of memory, ...) becomes the container's, so the Job's podFailurePolicy still tells retryable from final failures.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from kubetune.api.runtime import (
    ENV_MASTER_ADDR,
    ENV_MASTER_PORT,
    ENV_NODE_RANK,
    ENV_NODES,
    ENV_PROCS_PER_NODE,
    EXIT_REASONS,
    RENDEZVOUS_PORT,
    TrainerExit,
)

from .errors import InvalidInputError
from .termination import write_termination_message


def torchrun_arguments(environ: Mapping[str, str], trainer_args: list[str]) -> list[str] | None:
    """torchrun's command line for this pod, or None when one process is the whole run."""
    nodes, procs = int(environ.get(ENV_NODES, "1")), int(environ.get(ENV_PROCS_PER_NODE, "1"))
    if nodes < 1 or procs < 1:
        raise InvalidInputError(f"{ENV_NODES}={nodes} and {ENV_PROCS_PER_NODE}={procs} must be at least 1")
    if nodes == 1 and procs == 1:
        return None
    launch = ["--nproc-per-node", str(procs), "--max-restarts", "0"]
    if nodes == 1:
        launch.append("--standalone")
    else:
        missing = [name for name in (ENV_NODE_RANK, ENV_MASTER_ADDR) if not environ.get(name)]
        if missing:
            raise InvalidInputError(
                f"a {nodes}-node run needs {', '.join(missing)} (the operator's Indexed Job sets them)"
            )
        launch += [
            "--nnodes",
            str(nodes),
            "--node-rank",
            environ[ENV_NODE_RANK],
            "--master-addr",
            environ[ENV_MASTER_ADDR],
            "--master-port",
            environ.get(ENV_MASTER_PORT) or str(RENDEZVOUS_PORT),
        ]
    return [*launch, "-m", "kubetune_trainer", *trainer_args]


def failed_exit_code(failures: Mapping[int, object]) -> int:
    """The exit code of the lowest failed rank that exited with one (a signal or an unknown failure: 1)."""
    for _, failure in sorted(failures.items()):
        code = getattr(failure, "exitcode", None)
        if isinstance(code, int) and code > 0:
            return code
    return int(TrainerExit.ERROR)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        launch = torchrun_arguments(os.environ, argv)
    except InvalidInputError as error:
        code = error.exit_code
        write_termination_message({"exitReason": EXIT_REASONS[code], "exitCode": int(code), "message": str(error)})
        return int(code)
    if launch is None:
        from .cli import main as trainer

        return trainer(argv)
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(launch))
    except ChildFailedError as failed:
        return failed_exit_code(failed.failures)
    return int(TrainerExit.OK)


if __name__ == "__main__":
    raise SystemExit(main())
