"""Test helpers: deterministic waits and loopback ports. No sleeps-and-hope anywhere in the suite."""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["eventually", "free_port"]

T = TypeVar("T")


async def eventually(
    fn: Callable[[], T | Awaitable[T]], *, timeout: float = 10.0, interval: float = 0.05
) -> T:
    """Poll ``fn`` (sync or async) until it returns something truthy; return that value.

    Raises AssertionError naming the last value (or exception) when ``timeout`` passes first.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = fn()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result  # type: ignore[return-value]
            last = result
        except AssertionError as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout}s; last: {last!r}")
        await asyncio.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
