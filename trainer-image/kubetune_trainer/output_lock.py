"""One trainer per output folder: an exclusive `flock` on the lock file, released by the kernel on any exit.

A lock held by the kernel cannot go stale: a SIGKILLed or OOM-killed trainer releases it, so the next pod
(after preemption) starts without manual clean-up, while two live trainers on one folder are refused.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from kubetune.api.runtime import LOCK_FILE

from .errors import OutputLockedError


class OutputLock:
    """Context manager holding the output folder's lock for the whole run."""

    def __init__(self, output_dir: Path) -> None:
        self.path = output_dir / LOCK_FILE
        self._handle = None

    def acquire(self) -> OutputLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise OutputLockedError(
                f"output folder {self.path.parent} is in use by another trainer ({holder}); "
                "two trainers must not write to one output folder"
            ) from None
        handle.seek(0)
        handle.truncate()
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        handle.write(json.dumps(owner))
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
