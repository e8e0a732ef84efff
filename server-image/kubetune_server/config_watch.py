"""Reading serve.json and following its changes, so adapters come and go without a restart.

A mounted ConfigMap is updated by kubelet through a symlink swap, so the file is re-opened by path on every
poll and compared by content; holding an inode or watching mtime alone would miss the swap.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path

from kubetune.api import ServeConfig, format_validation_error
from pydantic import ValidationError

from .engine import Engine, adapter_sources

log = logging.getLogger(__name__)

RESTART_FIELDS = (
    "base_model",
    "served_base_name",
    "quantization",
    "merge_adapter",
    "generation",
    "ignore_base_mismatch",
    "engine",
    "vllm",
)


class ConfigError(Exception):
    """serve.json is missing or invalid."""


def read_serve_config(path: str) -> ServeConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the serve config {path}: {exc.strerror or exc}") from exc
    try:
        return ServeConfig.model_validate_json(text)
    except ValidationError as exc:
        raise ConfigError(f"{path} is not a valid serve config: {format_validation_error(exc)}") from exc


class ConfigWatcher:
    """Polls serve.json; on a new adapter list tells the engine to sync (other changes need a restart)."""

    def __init__(self, engine: Engine, path: str, interval_s: float = 2.0) -> None:
        self.engine = engine
        self.path = path
        self.interval_s = interval_s
        self._digest = self._read_digest()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.applied = 0

    def _read_digest(self) -> str | None:
        try:
            return hashlib.sha256(Path(self.path).read_bytes()).hexdigest()
        except OSError:
            return None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="kubetune-config-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval_s + 5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception:  # the watcher must outlive any one bad update
                log.exception("applying the changed serve config failed")

    def check(self) -> bool:
        """Apply the file if its content changed since the last look; True when something was applied."""
        digest = self._read_digest()
        if digest is None or digest == self._digest:
            return False
        try:
            config = read_serve_config(self.path)
        except ConfigError as exc:
            log.error("%s; keeping the current adapters", exc)
            self._digest = digest
            return False
        self._digest = digest
        for field in RESTART_FIELDS:
            if getattr(config, field) != getattr(self.engine.config, field):
                log.warning("serve config field %s changed; it takes effect only after a restart", field)
        report = self.engine.sync_adapters(adapter_sources(config, self.engine.pvc_root)).result()
        self.applied += 1
        log.info(
            "serve config applied: added %s, removed %s, refused %s",
            report.added or "none",
            report.removed or "none",
            report.failed or "none",
        )
        return True
