"""Run a service's ASGI app with uvicorn, the same way for every service."""

from __future__ import annotations

import logging
import sys
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from gravity_events import logs
from gravity_service.tasks import on_task_failure
from gravity_service.telemetry import shutdown_tracing

__all__ = ["TASK_FAILURE", "serve"]

log = logging.getLogger(__name__)

TASK_FAILURE = 1
"""Exit status after a supervised task died: the process supervisor is expected to restart it."""

KEEP_ALIVE_SECONDS = 75
"""Idle keep-alive: longer than clients keep idle connections (httpx 5 s, nginx upstreams 60 s). At
uvicorn's default 5 s a client reusing a connection the server is just closing gets "disconnected
without a response"."""


def serve(app: Any, *, host: str, port: int, log_level: str, **options: Any) -> None:
    """Serve ``app`` until SIGINT/SIGTERM, or until a supervised task fails.

    uvloop and httptools, keep-alive of :data:`KEEP_ALIVE_SECONDS`, no access log (one line per request
    costs more than ingest's whole webhook). ``options`` go to :class:`uvicorn.Config` as they are (the
    WebSocket settings of realtime, for instance) and may override these defaults. After
    :func:`gravity_service.telemetry.setup` chose JSON logs, uvicorn's own lines go through the same root
    handler (``log_config=None``) so every line on stderr is one JSON object.

    Returns after a clean shutdown. When a task of any :class:`~gravity_service.tasks.Supervisor` fails,
    uvicorn is asked to shut down (the lifespan's cleanup runs) and this exits with
    :data:`TASK_FAILURE`; a failed startup exits with uvicorn's status 3.
    """
    settings: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "loop": "uvloop",
        "http": "httptools",
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
        "access_log": False,
    }
    if logs.logging_json():
        settings["log_config"] = None
    server = uvicorn.Server(uvicorn.Config(app, **(settings | options)))
    failed: list[str] = []

    def shut_down(name: str) -> None:
        failed.append(name)
        server.should_exit = True

    with on_task_failure(shut_down):
        try:
            server.run()
        finally:
            shutdown_tracing()  # the spans of the last requests are still in the exporter's buffer
    if failed:
        log.error("exiting with status %d: supervised task(s) failed: %s", TASK_FAILURE, ", ".join(failed))
        sys.exit(TASK_FAILURE)
    if not server.started:
        sys.exit(STARTUP_FAILURE)
