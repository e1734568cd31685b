"""``gravity-fanout`` / ``python -m gravity_fanout``."""

from __future__ import annotations

from gravity_fanout.app import create_app
from gravity_fanout.settings import Settings
from gravity_service.serve import serve
from gravity_service.telemetry import setup


def main() -> None:
    """Read settings once and serve (health and metrics only; the work is the lifespan's consumers)."""
    settings = Settings()
    setup(settings, service="fanout")
    serve(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)


if __name__ == "__main__":
    main()
