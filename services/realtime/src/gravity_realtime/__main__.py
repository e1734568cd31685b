"""``gravity-realtime`` / ``python -m gravity_realtime``."""

from __future__ import annotations

from gravity_realtime.app import create_app
from gravity_realtime.protocol import uvicorn_options
from gravity_realtime.settings import Settings
from gravity_service.serve import serve
from gravity_service.telemetry import setup


def main() -> None:
    """Read settings once and serve WebSockets with :func:`~gravity_realtime.protocol.uvicorn_options`;
    exits non-zero if the key reader or the live stream dies."""
    settings = Settings()
    setup(settings, service="realtime")
    serve(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=5,
        **uvicorn_options(settings),
    )


if __name__ == "__main__":
    main()
