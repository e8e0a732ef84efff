"""`python -m kubetune_server`: read settings and serve.json, then serve until SIGTERM (draining first)."""

from __future__ import annotations

import logging
import sys

from .app import create_app
from .config_watch import ConfigError, read_serve_config
from .engine_choice import make_engine
from .errors import UnsupportedModel
from .settings import ServerSettings

log = logging.getLogger("kubetune_server")


def main() -> int:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = ServerSettings.from_env()
        config = read_serve_config(settings.config_path)
        engine = make_engine(config, pvc_root=settings.pvc_root)
    except (ConfigError, ValueError, UnsupportedModel) as exc:
        log.error("%s", exc)
        return 2
    failures: list[Exception] = []
    server: uvicorn.Server | None = None

    def stop_on_failure(exc: Exception) -> None:
        failures.append(exc)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, engine, on_load_failure=stop_on_failure)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            timeout_graceful_shutdown=int(settings.drain_timeout_s),
            log_config=None,
        )
    )
    server.run()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
