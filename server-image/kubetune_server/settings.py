"""Process settings from the environment the operator renders (names from kubetune.api.runtime)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

from kubetune.api.runtime import (
    ENV_API_KEY,
    ENV_DRAIN_SECONDS,
    ENV_HOST,
    ENV_PORT,
    ENV_PVC_ROOT,
    ENV_SERVE_CONFIG,
    SERVE_CONFIG_FILE,
    SERVER_PORT,
    SPEC_DIR,
)

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class ServerSettings:
    """Everything about the process that is not in serve.json."""

    config_path: str = str(PurePosixPath(SPEC_DIR) / SERVE_CONFIG_FILE)
    api_key: str | None = None
    host: str = "0.0.0.0"
    port: int = SERVER_PORT
    pvc_root: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    watch_interval_s: float = 2.0
    drain_timeout_s: float = 30.0

    def __repr__(self) -> str:  # never print the key
        key = "set" if self.api_key else "unset"
        return f"ServerSettings(config_path={self.config_path!r}, api_key={key}, host={self.host!r}, port={self.port})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServerSettings:
        env = os.environ if env is None else env
        port_text = env.get(ENV_PORT, str(SERVER_PORT))
        try:
            port = int(port_text)
        except ValueError:
            raise ValueError(f"{ENV_PORT}={port_text!r} is not a port number (1-65535)") from None
        if not 0 < port < 65536:
            raise ValueError(f"{ENV_PORT}={port} is not a port number (1-65535)")
        drain_text = env.get(ENV_DRAIN_SECONDS) or str(cls.drain_timeout_s)
        try:
            drain = float(drain_text)
        except ValueError:
            raise ValueError(f"{ENV_DRAIN_SECONDS}={drain_text!r} is not a number of seconds") from None
        return cls(
            drain_timeout_s=drain,
            config_path=env.get(ENV_SERVE_CONFIG) or cls.config_path,
            api_key=env.get(ENV_API_KEY) or None,
            host=env.get(ENV_HOST) or cls.host,
            port=port,
            pvc_root=env.get(ENV_PVC_ROOT) or None,
        )
