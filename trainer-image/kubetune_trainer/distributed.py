"""Who this process is in a `torchrun`/`accelerate launch` run (read from the env they set)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ProcessInfo:
    rank: int
    world_size: int
    local_world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def process_info(environ: dict[str, str] | None = None) -> ProcessInfo:
    environ = dict(os.environ) if environ is None else environ
    world = int(environ.get("WORLD_SIZE", "1"))
    return ProcessInfo(
        rank=int(environ.get("RANK", "0")),
        world_size=world,
        local_world_size=int(environ.get("LOCAL_WORLD_SIZE", str(world))),
    )


def barrier() -> None:
    """Wait for every process (a no-op when not distributed)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
