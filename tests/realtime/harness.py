"""What the realtime test modules share: a registry (real HTTP, real database) and realtime copies run with
the options ``python -m gravity_realtime`` uses, real WebSocket clients, and frames read with deadlines."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from tests.registry.conftest import ADMIN_TOKEN, registry_settings
from tests.support import notification, publish_events, serve, wait_ready
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gravity_events import ids, topics
from gravity_events.models import RcNotification
from gravity_events.settings import KafkaSettings
from gravity_realtime.app import create_app as create_realtime
from gravity_realtime.protocol import uvicorn_options
from gravity_realtime.settings import Settings as RealtimeSettings
from gravity_registry.app import create_app as create_registry

__all__ = [
    "FRAME_DEADLINE",
    "Registry",
    "close_code",
    "hello",
    "next_frames",
    "realtime_settings",
    "refused",
    "running_realtime",
]

FRAME_DEADLINE = 30.0
"""Per frame: the path raw topic → projection → sms_inbound → realtime takes milliseconds here, but a
busy shared CI machine has stalled it for seconds."""


def realtime_settings(kafka: KafkaSettings, registry_url: str, **overrides: Any) -> RealtimeSettings:
    """Settings for a realtime copy on this module's broker, asking ``registry_url``."""
    return RealtimeSettings(
        KAFKA_BOOTSTRAP_SERVERS=kafka.kafka_bootstrap_servers,
        KAFKA_ENABLE_IDEMPOTENCE=False,
        GRAVITY_REGISTRY_URL=registry_url,
        **overrides,
    )


@contextlib.asynccontextmanager
async def running_realtime(settings: RealtimeSettings, **config: Any) -> AsyncIterator[tuple[Any, int]]:
    """A realtime copy served by uvicorn with the entry point's options (``config`` overrides them), ready;
    yields (app, port)."""
    app = create_realtime(settings)
    async with serve(app, **(uvicorn_options(settings) | config)) as port:
        await wait_ready(f"http://127.0.0.1:{port}", timeout=30)
        yield app, port


@dataclass
class Registry:
    """A registry on this module's broker and a fresh database, and a client for it."""

    client: httpx.AsyncClient
    url: str
    kafka: KafkaSettings
    last_received: datetime | None = None
    keys: dict[str, str] = field(default_factory=dict)

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls, kafka: KafkaSettings, make_database: Callable[[], Awaitable[str]]
    ) -> AsyncIterator[Registry]:
        app = create_registry(registry_settings(kafka, await make_database()))
        async with serve(app) as port, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await wait_ready(client=client, timeout=30)
            yield cls(client, f"http://127.0.0.1:{port}", kafka)

    async def tenant(self) -> dict[str, Any]:
        """A new tenant (``tenantId``, ``apiKey``, ``auth`` headers)."""
        r = await self.client.post(
            "/v1/tenants", json={"name": "rt"}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert r.status_code == 201, r.text
        tenant = dict(r.json())
        tenant["auth"] = {"Authorization": f"Bearer {tenant['apiKey']}"}
        return tenant

    def _next_received_at(self) -> datetime:
        """Strictly increasing receivedAt, as one ingest copy stamps."""
        now = ids.utcnow()
        if self.last_received is not None and now <= self.last_received:
            now = self.last_received + timedelta(milliseconds=1)
        self.last_received = now
        return now

    async def send_sms(self, tenant_id: str, n: int = 1) -> list[str]:
        """Append ``n`` raw notifications for the tenant as ingest would; return their messageIds."""
        events = []
        for _ in range(n):
            body = notification("sub-rt")
            events.append(
                RcNotification(
                    tenant_id=tenant_id,
                    subscription_id="sub-rt",
                    rc_message_id=body["body"]["id"],
                    received_at=self._next_received_at(),
                    notification=body,
                )
            )
        await publish_events(self.kafka, topics.RC_RAW, *((e.rc_message_id, e) for e in events))
        return [ids.message_id_for(e.tenant_id, e.rc_message_id) for e in events]

    async def oldest_first(self, tenant: dict[str, Any]) -> list[str]:
        """Every messageId of the tenant in the gateway's order, as the messages API lists them."""
        r = await self.client.get("/v1/sms/messages", params={"limit": "100"}, headers=tenant["auth"])
        out = [m["messageId"] for m in r.json()["messages"]]
        while (cursor := r.json()["nextCursor"]) is not None:
            r = await self.client.get(
                "/v1/sms/messages", params={"limit": "100", "cursor": cursor}, headers=tenant["auth"]
            )
            out += [m["messageId"] for m in r.json()["messages"]]
        return out[::-1]

    async def stored(self, tenant: dict[str, Any], n: int, timeout: float = 30) -> list[str]:
        """Wait until the tenant has ``n`` messages stored; return them oldest first."""
        deadline = time.monotonic() + timeout
        while len(got := await self.oldest_first(tenant)) < n:
            assert time.monotonic() < deadline, f"{len(got)} of {n} messages stored"
            await asyncio.sleep(0.05)
        return got


async def hello(url: str, key: str | None = None, **kw: Any) -> ClientConnection:
    """Connect (no retry) and consume the ``connected`` frame."""
    headers = {"Authorization": f"Bearer {key}"} if key else None
    ws = await connect(url, additional_headers=headers, **kw)
    first = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
    assert first["type"] == "connected", first
    return ws


async def next_frames(ws: ClientConnection, n: int) -> list[dict[str, Any]]:
    """The next ``n`` frames, each within :data:`FRAME_DEADLINE`."""
    return [orjson.loads(await asyncio.wait_for(ws.recv(), FRAME_DEADLINE)) for _ in range(n)]


async def close_code(ws: ClientConnection, timeout: float = 10) -> tuple[int | None, list[dict[str, Any]]]:
    """Read until the server closes; return its close code and the frames that came before it."""
    frames = []
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            frames.append(orjson.loads(await asyncio.wait_for(ws.recv(), timeout)))
    return (closed.value.rcvd.code if closed.value.rcvd is not None else None), frames


async def refused(url: str, key: str | None = None) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Connect expecting a refusal before the upgrade; (status, headers, JSON body)."""
    headers = {"Authorization": f"Bearer {key}"} if key else None
    with pytest.raises(InvalidStatus) as refusal:
        ws = await connect(url, additional_headers=headers)
        await ws.close()
    response = refusal.value.response
    body = orjson.loads(response.body or b"null")
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body  # the contract's shape
    return response.status_code, {k.lower(): v for k, v in response.headers.raw_items()}, body
