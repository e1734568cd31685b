"""``gravity-fanout`` / ``python -m gravity_fanout``."""

from __future__ import annotations

import uvicorn

from gravity_events import logs
from gravity_fanout.app import create_app
from gravity_fanout.settings import Settings


def main() -> None:
    """Read settings once and serve."""
    settings = Settings()
    logs.configure(settings.log_level)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)


if __name__ == "__main__":
    main()
