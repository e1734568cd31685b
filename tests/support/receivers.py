"""A real HTTP webhook receiver on loopback, for tests and benchmarks.

Each path behaves as configured (status, delay, hang, an answer held until released, Retry-After) and every request is recorded with
its headers, body and arrival time. It is a real uvicorn server on a real socket: the code under test
talks HTTP to it exactly as to a customer's endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from tests.support.servers import serve

__all__ = ["Behaviour", "Received", "WebhookReceiver", "running_receiver"]


@dataclass
class Behaviour:
    """How one path answers."""

    status: int = 200
    delay: float = 0.0
    hang: bool = False
    release: asyncio.Event | None = None
    """When set, the answer waits until the event is set (a test decides the moment, not a delay)."""
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Received:
    """One request as it arrived."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class WebhookReceiver:
    """ASGI app recording requests; ``behave(path, ...)`` sets how a path answers."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._behaviours: dict[str, Behaviour] = {}
        self.port = 0

    def url(self, path: str = "/hook") -> str:
        """The absolute URL of ``path``."""
        return f"http://127.0.0.1:{self.port}{path}"

    def behave(self, path: str, **kwargs: Any) -> None:
        """Set how ``path`` answers from now on."""
        self._behaviours[path] = Behaviour(**kwargs)

    def received(self, path: str | None = None) -> list[Received]:
        """Requests so far (for one path, or all)."""
        return [r for r in self.requests if path is None or r.path == path]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        path = scope["path"]
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.requests.append(Received(path, headers, b"".join(chunks), time.monotonic()))
        behaviour = self._behaviours.get(path, Behaviour())
        if behaviour.hang:
            await asyncio.Event().wait()
        if behaviour.release is not None:
            await behaviour.release.wait()
        if behaviour.delay:
            await asyncio.sleep(behaviour.delay)  # the endpoint under simulation is slow
        await send(
            {
                "type": "http.response.start",
                "status": behaviour.status,
                "headers": [(k.encode(), v.encode()) for k, v in behaviour.headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": behaviour.body})


@contextlib.asynccontextmanager
async def running_receiver() -> AsyncIterator[WebhookReceiver]:
    """Serve a fresh receiver on a free loopback port for the duration of the block."""
    receiver = WebhookReceiver()
    async with serve(receiver, force_exit=True, lifespan="off") as port:
        receiver.port = port
        yield receiver
