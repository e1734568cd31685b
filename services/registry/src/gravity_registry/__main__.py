"""``gravity-registry`` / ``python -m gravity_registry``."""

from __future__ import annotations

import uvicorn

from gravity_events import logs
from gravity_registry.app import create_app
from gravity_registry.settings import Settings


def main() -> None:
    """Read settings once (refusing weak production configuration) and serve."""
    settings = Settings()
    logs.configure(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        loop="uvloop",
        http="httptools",
        # longer than clients keep idle connections (httpx 5 s, nginx upstreams 60 s): at uvicorn's 5 s a
        # client reusing a connection the server is closing gets "disconnected without a response"
        timeout_keep_alive=75,
    )


if __name__ == "__main__":
    main()
