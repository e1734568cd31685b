"""``gravity-ingest`` / ``python -m gravity_ingest``."""

from __future__ import annotations

from gravity_events import logs
from gravity_ingest.app import create_app
from gravity_ingest.settings import Settings
from gravity_service.serve import serve


def main() -> None:
    """Read settings once and serve; exits non-zero if the subscription reader dies."""
    settings = Settings()
    logs.configure(settings.log_level)
    serve(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)


if __name__ == "__main__":
    main()
