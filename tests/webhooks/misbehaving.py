"""A raw TCP endpoint that answers HTTP badly on purpose, to test the delivery client's bounds.

The uvicorn receiver in tests.support always speaks correct HTTP; these behaviours need bytes on the wire
that no ASGI app can produce (a header block without end, a status line a byte at a time, endless
``100 Continue``). Each connection reads the request head, then runs the chosen script until the client
goes away or the endpoint closes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

__all__ = ["SCRIPTS", "MisbehavingEndpoint", "Script", "misbehaving_endpoint"]

Script = Callable[[asyncio.StreamWriter], Awaitable[None]]

TRICKLE_SECONDS = 0.05
"""Pause between the bytes of a trickling answer (the slow endpoint under simulation)."""


async def _write(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()


async def endless_header(writer: asyncio.StreamWriter) -> None:
    """A status line, then header lines as fast as the client reads them, never a blank line."""
    await _write(writer, b"HTTP/1.1 200 OK\r\n")
    line = b"x-filler: " + b"a" * 1000 + b"\r\n"
    while True:
        await _write(writer, line * 16)


async def trickled_status_line(writer: asyncio.StreamWriter) -> None:
    """One byte of a never-ending status line at a time."""
    await _write(writer, b"HTTP/1.1 200 ")
    while True:
        await _write(writer, b"O")
        await asyncio.sleep(TRICKLE_SECONDS)


async def endless_continue(writer: asyncio.StreamWriter) -> None:
    """Informational answers forever, the final answer never."""
    while True:
        await _write(writer, b"HTTP/1.1 100 Continue\r\n\r\n")
        await asyncio.sleep(TRICKLE_SECONDS / 10)


async def trickled_body(writer: asyncio.StreamWriter) -> None:
    """A 200 whose chunked body arrives a byte at a time and never ends."""
    await _write(writer, b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    while True:
        await _write(writer, b"1\r\nx\r\n")
        await asyncio.sleep(TRICKLE_SECONDS)


async def endless_body(writer: asyncio.StreamWriter) -> None:
    """A 200 without a length whose body comes as fast as the client reads it, forever."""
    await _write(writer, b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n")
    while True:
        await _write(writer, b"a" * 65536)


SCRIPTS: dict[str, Script] = {
    "endless_header": endless_header,
    "trickled_status_line": trickled_status_line,
    "endless_continue": endless_continue,
    "trickled_body": trickled_body,
    "endless_body": endless_body,
}


@dataclass
class MisbehavingEndpoint:
    """Where the endpoint listens, how many requests reached it and how many connections are open."""

    port: int
    requests: int = 0
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    def url(self, path: str = "/hook") -> str:
        """The absolute URL of ``path``."""
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def open_connections(self) -> int:
        """Connections whose script is still running (the client has not gone away)."""
        return len(self._writers)


@contextlib.asynccontextmanager
async def misbehaving_endpoint(script: Script) -> AsyncIterator[MisbehavingEndpoint]:
    """Serve ``script`` on a free loopback port for the duration of the block."""
    endpoint = MisbehavingEndpoint(port=0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        endpoint._handlers.add(task)
        endpoint._writers.add(writer)
        try:
            await reader.readuntil(b"\r\n\r\n")
            endpoint.requests += 1
            await script(writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away: what the bound under test is for
        finally:
            endpoint._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            endpoint._handlers.discard(task)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    endpoint.port = server.sockets[0].getsockname()[1]
    try:
        yield endpoint
    finally:
        server.close()
        # Aborting makes each script's next write fail, so every handler ends by itself (cancelling
        # them instead makes asyncio's stream callback log the cancellation as an error).
        for writer in list(endpoint._writers):
            writer.transport.abort()
        await asyncio.gather(*endpoint._handlers)
        await server.wait_closed()
