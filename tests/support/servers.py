"""Loopback ports and uvicorn servers on them, in the test's event loop or in a thread of their own."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn

__all__ = ["free_port", "serve", "serve_in_thread"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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


@contextlib.contextmanager
def serve_in_thread(app: Any, **config: Any) -> Iterator[int]:
    """Run ``app`` with uvicorn on its own event loop in a thread (for synchronous tests such as
    schemathesis and hypothesis, which call it with blocking clients); yield its port."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(30)
