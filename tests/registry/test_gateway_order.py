"""The gateway's order: each tenant's ``sms_inbound`` stream is strictly increasing in (receivedAt,
messageId) and is exactly what the messages API lists, however the messages reach the projection."""

from __future__ import annotations

import itertools
import logging
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from tests.registry.conftest import (
    Registry,
    feed,
    now_ms,
    oldest_first,
    raw,
    registry_settings,
    sms_inbound_for,
    stored,
    stream_of,
)
from tests.support import eventually, wait_ready

from gravity_events import ids
from gravity_events.settings import KafkaSettings
from gravity_registry import db
from gravity_registry.app import create_app
from gravity_registry.handlers import stamp_in_gateway_order


async def test_a_message_stamped_earlier_but_projected_later_is_later_in_the_gateway_order(
    registry: Registry, kafka_settings: KafkaSettings
) -> None:
    """Two ingest copies stamp receivedAt, and the raw topic spreads a tenant over partitions, so a message
    can reach the projection after one stamped later. It is published after it, so it must come after it
    in the gateway's order too: a WebSocket client resuming from the last frame it saw asks for what comes
    after that one, and would otherwise never get the late message."""
    since = now_ms()
    tenant = await registry.tenant()
    seen_first = raw(tenant["tenantId"])
    stamped_earlier = raw(tenant["tenantId"], received_at=seen_first.received_at - timedelta(seconds=2))
    await feed(kafka_settings, seen_first)
    await stored(registry, tenant, 1)
    await feed(kafka_settings, stamped_earlier)
    await stored(registry, tenant, 2)
    first_id, late_id = (
        ids.message_id_for(tenant["tenantId"], e.rc_message_id) for e in (seen_first, stamped_earlier)
    )
    stream = await stream_of(kafka_settings, tenant["tenantId"], since, 2)
    assert [m for _, m in stream] == [first_id, late_id]
    assert await oldest_first(registry, tenant) == stream  # the stream's order and stamps are the API's
    r = await registry.client.get("/v1/sms/messages", params={"after": first_id}, headers=tenant["auth"])
    assert [m["messageId"] for m in r.json()["messages"]] == [late_id]
    assert stream[1][0] >= stream[0][0]  # never earlier than what was already published


async def test_a_batch_kept_waiting_for_a_tenant_order_lock_stores_nothing_and_is_tried_again(
    kafka_settings: KafkaSettings, make_database: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Another registry copy holds the tenant's order lock (as while it waits for the broker's acks). The
    batch gives up after the lock timeout, stores nothing, says why, and is tried again — it neither waits
    forever holding a pool connection nor stores the message out of order. Once the lock is free, the
    message is stored once and published."""
    caplog.set_level(logging.WARNING, logger="gravity_registry.handlers")
    database_url = await make_database()
    settings = registry_settings(
        kafka_settings, database_url, GRAVITY_REGISTRY_ORDER_LOCK_TIMEOUT_SECONDS=0.2
    )
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://registry") as client:
            await wait_ready(client=client, timeout=30)
            registry = Registry(client, settings, app)
            tenant = await registry.tenant()
            since = now_ms()
            holder = await asyncpg.connect(database_url)
            try:
                await db.lock_tenants(holder, tenant_ids=[tenant["tenantId"]], timeout_seconds=5)
                event = raw(tenant["tenantId"])
                await feed(kafka_settings, event)

                def refused_twice() -> bool:
                    return sum("order lock" in r.getMessage() for r in caplog.records) >= 2

                await eventually(refused_twice, timeout=30)
                r = await client.get("/v1/sms/messages", headers=tenant["auth"])
                assert r.json()["messages"] == []
            finally:
                await db.unlock_tenants(holder, tenant_ids=[tenant["tenantId"]])
                await holder.close()
            [message] = await stored(registry, tenant, 1)
            assert message["messageId"] == ids.message_id_for(tenant["tenantId"], event.rc_message_id)
            await sms_inbound_for(kafka_settings, {message["messageId"]}, since)  # published
            # (counted on the topic it could be more than once: this module's other registry, on its own
            # database and group, projects the same raw record; this registry's row says it published)
            conn = await asyncpg.connect(database_url)
            try:
                rows = await conn.fetch(
                    "SELECT published FROM messages WHERE tenant_id = $1", tenant["tenantId"]
                )
            finally:
                await conn.close()
            assert [r["published"] for r in rows] == [True]


async def test_two_registry_copies_publish_each_tenant_in_its_gateway_order(
    registry: Registry, kafka_settings: KafkaSettings
) -> None:
    """Stamps jittered by ±300 ms (two ingest copies, clocks and queues apart), records spread over the raw
    partitions, two registry copies in one group projecting them: the tenant's sms_inbound stream is
    strictly increasing in (receivedAt, messageId) and is exactly what the messages API lists."""
    since = now_ms()
    tenants = [await registry.tenant("T1"), await registry.tenant("T2")]
    second = create_app(
        registry_settings(
            kafka_settings,
            registry.settings.database_url.get_secret_value(),
            GRAVITY_REGISTRY_CONSUMER_GROUP=registry.settings.consumer_group,
        )
    )
    rng = random.Random(6)
    async with LifespanManager(second, startup_timeout=60):
        for _ in range(6):  # waves, so both copies and several batches take part
            base = ids.utcnow()
            wave = [
                raw(t["tenantId"], received_at=base + timedelta(milliseconds=rng.randint(-300, 300)))
                for _ in range(40)
                for t in tenants
            ]
            await feed(kafka_settings, *wave)
        for tenant in tenants:

            async def all_stored(tenant: dict[str, Any] = tenant) -> bool:
                return len(await oldest_first(registry, tenant)) == 240

            await eventually(all_stored, timeout=60)
            stream = await stream_of(kafka_settings, tenant["tenantId"], since, 240)
            assert len({m for _, m in stream}) == 240
            assert all(a < b for a, b in itertools.pairwise(stream)), "published out of gateway order"
            assert await oldest_first(registry, tenant) == stream


async def test_a_message_a_crash_left_unpublished_is_published_later_in_the_gateway_order(
    registry: Registry, kafka_settings: KafkaSettings
) -> None:
    """A copy killed between committing a row and publishing it leaves the row unpublished; the raw record
    comes round again (its offset was not committed) after other messages were published. It then takes
    a place after them, so it reaches clients that resume from any of them."""
    tenant = await registry.tenant()
    later = raw(tenant["tenantId"])
    left = raw(tenant["tenantId"], received_at=later.received_at - timedelta(seconds=1))
    sms = left.notification["body"]
    conn = await asyncpg.connect(registry.settings.database_url.get_secret_value())
    try:
        await db.insert_messages(  # what the killed copy committed
            conn,
            rows=[
                db.MessageRow(
                    tenant_id=tenant["tenantId"],
                    rc_message_id=left.rc_message_id,
                    message_id=ids.message_id_for(tenant["tenantId"], left.rc_message_id),
                    from_number=sms["from"]["phoneNumber"],
                    to_number=sms["to"][0]["phoneNumber"],
                    body=sms["subject"],
                    timestamp=datetime(2026, 3, 1, 14, 30, tzinfo=UTC),
                    received_at=left.received_at,
                    conversation_id=None,
                )
            ],
        )
    finally:
        await conn.close()
    since = now_ms()
    await feed(kafka_settings, later)
    await stream_of(kafka_settings, tenant["tenantId"], since, 1)
    await feed(kafka_settings, left)  # the redelivery
    stream = await stream_of(kafka_settings, tenant["tenantId"], since, 2)
    assert [m for _, m in stream] == [
        ids.message_id_for(tenant["tenantId"], e.rc_message_id) for e in (later, left)
    ]
    assert stream[0] < stream[1]
    assert await oldest_first(registry, tenant) == stream


def test_stamps_follow_the_last_published_message_and_move_no_more_than_needed() -> None:
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    ms = timedelta(milliseconds=1)

    def row(tenant: str, at: datetime, message_id: str) -> dict[str, Any]:
        return {"tenant_id": tenant, "received_at": at, "message_id": message_id}

    pending = [
        row("ten_a", t0 - 5 * ms, "msg_z"),  # before a's last: its millisecond (z sorts after m)
        row("ten_a", t0 - ms, "msg_a"),  # before: the next millisecond (a sorts before z)
        row("ten_b", t0 - ms, "msg_b"),  # b has published nothing: kept
        row("ten_a", t0 + 9 * ms, "msg_c"),  # after everything: kept
    ]
    got = [(r["message_id"], at) for r, at in stamp_in_gateway_order(pending, {"ten_a": (t0, "msg_m")})]
    assert got == [("msg_z", t0), ("msg_a", t0 + ms), ("msg_b", t0 - ms), ("msg_c", t0 + 9 * ms)]
