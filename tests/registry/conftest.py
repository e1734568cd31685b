"""Registry fixtures: an app on a fresh database with a unique consumer group, tenant factories, and
helpers that feed the projection raw notifications and read back what it stored and published."""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager
from tests.support import TopicTail, eventually, publish_events, raw_event, wait_ready

from gravity_events import topics
from gravity_events.models import RcNotification
from gravity_events.settings import KafkaSettings
from gravity_registry.app import create_app
from gravity_registry.settings import Settings

ADMIN_TOKEN = "test-admin-token-" + "x" * 16


def registry_settings(kafka: KafkaSettings, database_url: str, **overrides: Any) -> Settings:
    """Settings for a registry on the session broker and ``database_url``."""
    values: dict[str, Any] = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.kafka_bootstrap_servers,
        "KAFKA_ENABLE_IDEMPOTENCE": kafka.kafka_enable_idempotence,
        "KAFKA_SESSION_TIMEOUT_MS": kafka.kafka_session_timeout_ms,
        "DATABASE_URL": database_url,
        "GRAVITY_ADMIN_TOKEN": ADMIN_TOKEN,
        "GRAVITY_REGISTRY_CONSUMER_GROUP": "registry-test-" + secrets.token_hex(4),
        "GRAVITY_REGISTRY_OUTBOX_SWEEP_SECONDS": 0.2,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Registry:
    """A running registry app and a client for it."""

    client: httpx.AsyncClient
    settings: Settings
    app: Any

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    async def tenant(self, name: str = "Acme") -> dict[str, Any]:
        r = await self.client.post("/v1/tenants", json={"name": name}, headers=self.admin)
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        body["auth"] = {"Authorization": f"Bearer {body['apiKey']}"}
        return body


@pytest.fixture(scope="module")
async def registry(
    kafka_settings: KafkaSettings, make_database: Callable[[], Awaitable[str]]
) -> AsyncIterator[Registry]:
    """One registry per test module on its own database."""
    settings = registry_settings(kafka_settings, await make_database())
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://registry") as client:
            await wait_ready(client=client, timeout=30)
            yield Registry(client, settings, app)


# --- the projection: feeding raw notifications, reading what the registry made of them ------------------


def raw(
    tenant_id: str, rc_id: str | None = None, *, received_at: datetime | None = None, **body: Any
) -> RcNotification:
    """What ingest appends for one notification of ``tenant_id`` (a fresh RingCentral id by default)."""
    return raw_event(tenant_id, "sub-x", rc_id=rc_id, received_at=received_at, **body)


async def feed(kafka: KafkaSettings, *events: RcNotification) -> None:
    """Append ``events`` to the raw topic, keyed as ingest keys them."""
    await publish_events(kafka, topics.RC_RAW, *((e.rc_message_id, e) for e in events))


async def stored(
    registry: Registry, tenant: dict[str, Any], count: int, **params: Any
) -> list[dict[str, Any]]:
    """Wait until the tenant has ``count`` messages; return them (newest first)."""

    async def fetch() -> list[dict[str, Any]]:
        r = await registry.client.get(
            "/v1/sms/messages", params={"limit": 100, **params}, headers=tenant["auth"]
        )
        msgs: list[dict[str, Any]] = r.json()["messages"]
        return msgs if len(msgs) == count else []

    return await eventually(fetch, timeout=15)


async def feed_in_order(
    registry: Registry, kafka: KafkaSettings, tenant: dict[str, Any], *events: RcNotification
) -> None:
    """Feed one at a time, each once the previous is stored: the raw topic spreads a tenant over
    partitions, and a message that reaches the projection after a later-stamped one is published, and
    stamped, after it. Fed like this, every message keeps the receivedAt it was given."""
    for n, event in enumerate(events, 1):
        await feed(kafka, event)
        await stored(registry, tenant, n)


def now_ms() -> int:
    """A topic position to read from: a second before now (clocks of one machine)."""
    return int(time.time() * 1000) - 1000


async def sms_inbound_for(kafka: KafkaSettings, message_ids: set[str], since: int) -> Counter[str]:
    """How often each messageId appears on the canonical topic since ``since`` (counting as it reads)."""
    counts: Counter[str] = Counter()
    async with TopicTail(kafka, topics.SMS_INBOUND, since=since) as tail:
        done = 0

        async def read() -> None:
            nonlocal done
            records = await tail.poll()
            counts.update(orjson.loads(r.value)["messageId"] for r in records[done:])
            done = len(records)

        async def seen() -> bool:
            await read()
            return all(counts[m] for m in message_ids)

        await eventually(seen, timeout=60)
        for _ in range(3):  # a little more, for duplicates published just after
            await read()
    return Counter({m: counts[m] for m in message_ids})


async def stream_of(kafka: KafkaSettings, tenant_id: str, since: int, count: int) -> list[tuple[str, str]]:
    """The tenant's ``sms_inbound`` records in topic order, as (gravity-received-at, messageId)."""
    async with TopicTail(kafka, topics.SMS_INBOUND, since=since) as tail:

        async def mine() -> list[tuple[str, str]]:
            records = [r for r in await tail.poll() if r.key == tenant_id.encode()]
            got = [
                (dict(r.headers)["gravity-received-at"].decode(), orjson.loads(r.value)["messageId"])
                for r in records
            ]
            return got if len(got) >= count else []

        return await eventually(mine, timeout=60)


async def oldest_first(registry: Registry, tenant: dict[str, Any]) -> list[tuple[str, str]]:
    """Every stored message of the tenant as (receivedAt, messageId), in the gateway's order."""
    got: list[tuple[str, str]] = []
    cursor = None
    while True:
        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = (await registry.client.get("/v1/sms/messages", params=params, headers=tenant["auth"])).json()
        got += [(m["receivedAt"], m["messageId"]) for m in page["messages"]]
        cursor = page["nextCursor"]
        if cursor is None:
            return got[::-1]
