"""``gravity-registry`` / ``python -m gravity_registry``."""

from __future__ import annotations

from gravity_events import logs
from gravity_registry.app import create_app
from gravity_registry.settings import Settings
from gravity_service.serve import serve


def main() -> None:
    """Read settings once (refusing weak production configuration) and serve."""
    settings = Settings()
    logs.configure(settings.log_level)
    serve(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)


if __name__ == "__main__":
    main()
