"""Serve an ASGI app with uvicorn on a real loopback port inside the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

from tests.support import free_port

__all__ = ["serve"]


@contextlib.asynccontextmanager
async def serve(app: Any, *, force_exit: bool = False, **config: Any) -> AsyncIterator[int]:
    """Run ``app`` (lifespan included) until the block ends; yield its port.

    ``force_exit`` does not wait for open requests at the end (for receivers that simulate a hang).
    """
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server exited while starting")
        await asyncio.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        server.force_exit = force_exit
        await asyncio.wait_for(task, 30)
