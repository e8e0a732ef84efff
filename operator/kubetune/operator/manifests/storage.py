"""Where trainers and servers keep things on volumes: each run's own output folder, and finding it again."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from kubetune.api import runtime
from kubetune.api.sources import PvcPath

OUTPUT_FLAG = "--output"


def run_folder(base: PvcPath, run_id: str) -> PvcPath:
    """`<base>/runs/<run_id>`: one run's checkpoints, adapter and metrics, apart from every other run's."""
    return PvcPath(claim_name=base.claim_name, path=str(PurePosixPath(base.path or ".") / runtime.RUNS_DIR / run_id))


def output_of_job(job: dict[str, Any] | None) -> PvcPath | None:
    """The output folder a trainer Job was rendered with (its `--output` argument), as a claim and path.

    The Job, not today's rendering, says where an adapter is: a Job created by an older operator writes where
    that operator told it to."""
    if job is None:
        return None
    containers = (((job.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    for container in containers:
        args = list(container.get("args") or [])
        if OUTPUT_FLAG not in args[:-1]:
            continue
        folder = PurePosixPath(args[args.index(OUTPUT_FLAG) + 1])
        try:
            relative = folder.relative_to(runtime.PVC_ROOT)
        except ValueError:
            return None
        if not relative.parts:
            return None
        claim, rest = relative.parts[0], PurePosixPath(*relative.parts[1:]) if len(relative.parts) > 1 else None
        return PvcPath(claim_name=claim, path=str(rest) if rest else "")
    return None
