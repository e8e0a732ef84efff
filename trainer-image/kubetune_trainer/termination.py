"""The final summary in the container's termination message, so the operator still learns the outcome
when a status patch was lost. Kubernetes keeps at most 4096 bytes of it."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from kubetune.api.runtime import ENV_TERMINATION_LOG, TERMINATION_LOG

log = logging.getLogger(__name__)

MAX_TERMINATION_BYTES = 4096


def termination_log_path() -> Path | None:
    """The env override, else /dev/termination-log when it exists (in a pod), else nowhere."""
    configured = os.environ.get(ENV_TERMINATION_LOG)
    if configured:
        return Path(configured)
    default = Path(TERMINATION_LOG)
    return default if default.exists() else None


def encode_summary(summary: dict[str, Any], limit: int = MAX_TERMINATION_BYTES) -> bytes:
    """Compact JSON of at most `limit` bytes: the message is shortened first, then optional parts dropped."""
    summary = dict(summary)
    data = json.dumps(summary, separators=(",", ":"), sort_keys=True).encode()
    message = str(summary.get("message") or "")
    while len(data) > limit and message:
        message = message[: max(0, len(message) - (len(data) - limit) - 16)]
        summary["message"] = message + "..."
        if not message:
            summary.pop("message")
        data = json.dumps(summary, separators=(",", ":"), sort_keys=True).encode()
    for optional in ("skippedExamples", "metrics"):
        if len(data) > limit and optional in summary:
            summary.pop(optional)
            data = json.dumps(summary, separators=(",", ":"), sort_keys=True).encode()
    return data[:limit]


def write_termination_message(summary: dict[str, Any], path: Path | None = None) -> Path | None:
    """Write the summary where Kubernetes picks it up; never raises (the exit code matters more)."""
    target = path or termination_log_path()
    if target is None:
        return None
    try:
        target.write_bytes(encode_summary(summary))
        return target
    except OSError as error:
        log.warning("cannot write the termination message to %s: %s", target, error)
        return None
