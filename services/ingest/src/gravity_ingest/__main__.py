"""``gravity-ingest`` / ``python -m gravity_ingest``."""

from __future__ import annotations

from gravity_ingest.app import create_app
from gravity_ingest.settings import Settings
from gravity_service.serve import serve
from gravity_service.telemetry import setup


def main() -> None:
    """Read settings once and serve; exits non-zero if the subscription reader dies."""
    settings = Settings()
    setup(settings, service="ingest")
    serve(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)


if __name__ == "__main__":
    main()
