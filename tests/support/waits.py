"""Deterministic waits: poll until a condition holds or a deadline passes, never a bare sleep."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import httpx

__all__ = ["eventually", "wait_ready"]

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


async def wait_ready(
    base_url: str = "",
    *,
    client: httpx.AsyncClient | None = None,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
    timeout: float = 60.0,
) -> None:
    """Poll ``{base_url}/readyz`` until it answers 200; a refused or failed request is "not yet".

    ``client`` (e.g. on an ASGI transport) is used when given; ``proc``, the process behind the URL, fails the
    wait at once if it exits, with the tail of its ``log``.
    """

    async def answers(c: httpx.AsyncClient) -> bool:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log is not None else ""
            raise RuntimeError(f"{proc.args} exited with {proc.returncode} before it was ready\n{tail}")
        try:
            return (await c.get(base_url + "/readyz")).status_code == 200
        except httpx.HTTPError:
            return False

    if client is not None:
        await eventually(lambda: answers(client), timeout=timeout, interval=0.1)
        return
    async with httpx.AsyncClient(timeout=2) as own:
        await eventually(lambda: answers(own), timeout=timeout, interval=0.1)
