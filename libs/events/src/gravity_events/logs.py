"""One log format for every service: timestamped lines on stderr, aiokafka's chatter kept to warnings."""

from __future__ import annotations

import logging

__all__ = ["configure"]


def configure(level: str) -> None:
    """Set the root logger to ``level`` with timestamps; aiokafka's INFO lines only at DEBUG."""
    level = level.upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level != "DEBUG":  # aiokafka's INFO lines (metadata, connections) drown the service's own
        logging.getLogger("aiokafka").setLevel(logging.WARNING)
