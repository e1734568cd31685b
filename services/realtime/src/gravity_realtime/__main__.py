"""``gravity-realtime`` / ``python -m gravity_realtime``."""

from __future__ import annotations

from gravity_events import logs
from gravity_realtime.app import create_app
from gravity_realtime.protocol import AbortableWebSocketProtocol
from gravity_realtime.settings import Settings
from gravity_service.serve import serve


def main() -> None:
    """Read settings once and serve WebSockets without compression (14 KiB vs 64 KiB a socket); exits
    non-zero if the key reader or the live stream dies."""
    settings = Settings()
    logs.configure(settings.log_level)
    serve(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        ws=AbortableWebSocketProtocol,  # websockets-sansio that can drop a non-reading client
        ws_per_message_deflate=False,
        ws_ping_interval=settings.ping_interval_seconds,
        ws_ping_timeout=settings.ping_timeout_seconds,
        ws_max_queue=32,
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
