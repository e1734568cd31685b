"""Limits that keep one tenant from exhausting the registry: a request-body cap enforced at the ASGI level
(before anything parses the body) and per-tenant token buckets for the routes that make the registry do
outside work (test webhooks, re-sends).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gravity_registry.errors import PayloadTooLarge, RateLimited

__all__ = ["BodyLimit", "TokenBuckets"]


class BodyLimit:
    """Refuse a request whose body is larger than ``max_bytes`` with 413 ``payload_too_large``.

    A declared ``Content-Length`` over the limit is refused without reading the body. Otherwise the body
    is read here, at most ``max_bytes`` plus one chunk of it, before the app sees any of it: a chunked
    body that grows past the limit is refused as soon as it does, and the app receives the buffered body
    unchanged. Bodies within the limit cost one copy of at most ``max_bytes``.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send)
            return
        buffered: list[Message] = []
        size = 0
        while True:
            message = await receive()
            buffered.append(message)
            if message["type"] != "http.request":
                break  # the client went away: let the app see it
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return buffered.pop(0) if buffered else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        error = PayloadTooLarge(
            f"the request body is larger than {self.max_bytes} bytes", {"limit": self.max_bytes}
        )
        body = orjson.dumps(error.body())
        await send(
            {
                "type": "http.response.start",
                "status": error.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),  # the unread rest of the body is not worth reading
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length itself; count the bytes instead
    return None


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class TokenBuckets:
    """One token bucket per tenant, in this process: ``burst`` tokens, refilled at ``per_minute``.

    Each copy of the registry keeps its own buckets, so N copies behind a balancer allow up to N times the
    rate; the limit is there to stop one tenant from swamping a copy, not to meter exactly. Full buckets
    are forgotten once there are more than ``max_tenants`` of them, so memory stays bounded.
    """

    def __init__(
        self,
        *,
        what: str,
        per_minute: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_tenants: int = 10_000,
    ) -> None:
        self.what = what
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self._clock = clock
        self._max = max_tenants
        self._buckets: dict[str, _Bucket] = {}

    def take(self, tenant_id: str) -> None:
        """Spend one of the tenant's tokens, or raise :class:`RateLimited` with the seconds until one."""
        now = self._clock()
        bucket = self._buckets.get(tenant_id)
        if bucket is None:
            if len(self._buckets) >= self._max:
                self._forget_full(now)
            bucket = self._buckets[tenant_id] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens < 1.0:
            retry_after = max(1, math.ceil((1.0 - bucket.tokens) / self.rate))
            raise RateLimited(
                f"too many {self.what} requests for this tenant; retry in {retry_after} s",
                retry_after=retry_after,
            )
        bucket.tokens -= 1.0

    def _forget_full(self, now: float) -> None:
        for tenant_id, bucket in list(self._buckets.items()):
            if bucket.tokens + (now - bucket.at) * self.rate >= self.burst:
                del self._buckets[tenant_id]
