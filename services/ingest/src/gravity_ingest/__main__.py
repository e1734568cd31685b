"""``gravity-ingest`` / ``python -m gravity_ingest``."""

from __future__ import annotations

import logging

import uvicorn

from gravity_ingest.app import create_app
from gravity_ingest.settings import Settings


def main() -> None:
    """Read settings once and serve (uvloop + httptools)."""
    settings = Settings()
    level = settings.log_level.upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level != "DEBUG":  # aiokafka's INFO lines (metadata, connections) drown ingest's own
        logging.getLogger("aiokafka").setLevel(logging.WARNING)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        loop="uvloop",
        http="httptools",
        access_log=False,
    )


if __name__ == "__main__":
    main()
