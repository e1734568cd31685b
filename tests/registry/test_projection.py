"""The projection against a real broker and PostgreSQL: a raw notification becomes one stored message and
one ``sms_inbound`` record; duplicates, replays, malformed records and unknown tenants change nothing else."""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

import asyncpg
import orjson
import pytest
from asgi_lifespan import LifespanManager
from tests.registry.conftest import (
    Registry,
    feed,
    now_ms,
    raw,
    registry_settings,
    sms_inbound_for,
    stored,
)
from tests.support import TopicTail, eventually

from gravity_events import ids, topics
from gravity_events.codec import encode, encode_headers
from gravity_events.kafka import make_producer
from gravity_events.settings import KafkaSettings
from gravity_registry.app import create_app


async def test_a_notification_becomes_one_message_and_one_sms_inbound(
    registry: Registry, kafka_settings: KafkaSettings
) -> None:
    since = now_ms()
    tenant = await registry.tenant()
    event = raw(tenant["tenantId"])
    await feed(kafka_settings, event)
    [message] = await stored(registry, tenant, 1)
    message_id = ids.message_id_for(tenant["tenantId"], event.rc_message_id)
    assert message == {
        "messageId": message_id,
        "direction": "inbound",
        "from": "+15559876543",
        "to": "+15551234567",
        "body": "Yes, I confirm",
        "status": "received",
        "rcMessageId": event.rc_message_id,
        "tenantId": tenant["tenantId"],
        "timestamp": "2026-03-01T14:30:00.000Z",
        "receivedAt": ids.format_timestamp(event.received_at),
    }
    one = await registry.client.get(f"/v1/sms/messages/{message_id}", headers=tenant["auth"])
    assert one.json() == message
    async with TopicTail(kafka_settings, topics.SMS_INBOUND, since=since) as tail:

        async def mine() -> list[Any]:
            return [r for r in await tail.poll() if orjson.loads(r.value)["messageId"] == message_id]

        [record] = await eventually(mine)
    assert record.key == tenant["tenantId"].encode()
    assert record.value == orjson.dumps(
        {
            "type": "sms_inbound",
            "messageId": message_id,
            "from": "+15559876543",
            "to": "+15551234567",
            "body": "Yes, I confirm",
            "rcMessageId": event.rc_message_id,
            "tenantId": tenant["tenantId"],
            "timestamp": "2026-03-01T14:30:00.000Z",
        }
    )
    assert dict(record.headers)["gravity-received-at"] == ids.format_timestamp(event.received_at).encode()


async def test_fifty_duplicates_store_one_row_and_publish_once(
    registry: Registry, kafka_settings: KafkaSettings
) -> None:
    since = now_ms()
    tenant = await registry.tenant()
    event = raw(tenant["tenantId"])
    await feed(kafka_settings, *([event] * 50))
    marker = raw(tenant["tenantId"])  # fed after the duplicates: once it is stored, they were handled
    await feed(kafka_settings, marker)
    messages = await stored(registry, tenant, 2)
    assert sorted(m["rcMessageId"] for m in messages) == sorted([event.rc_message_id, marker.rc_message_id])
    counts = await sms_inbound_for(kafka_settings, {m["messageId"] for m in messages}, since)
    assert set(counts.values()) == {1}


async def test_replay_from_offset_zero_stores_nothing_new_and_publishes_nothing_again(
    registry: Registry, kafka_settings: KafkaSettings
) -> None:
    since = now_ms()
    tenant = await registry.tenant()
    events = [raw(tenant["tenantId"]) for _ in range(5)]
    await feed(kafka_settings, *events)
    before = await stored(registry, tenant, 5)
    # a second registry on the same database, new consumer group: re-reads the raw topic from 0
    replayer = create_app(
        registry_settings(kafka_settings, registry.settings.database_url.get_secret_value())
    )
    async with LifespanManager(replayer, startup_timeout=60):
        await asyncio.wait_for(replayer.state.projection.caught_up.wait(), 60)
    after = await stored(registry, tenant, 5)
    assert after == before
    counts = await sms_inbound_for(kafka_settings, {m["messageId"] for m in before}, since)
    assert set(counts.values()) == {1}


async def test_malformed_records_are_dead_lettered_and_later_ones_processed(
    registry: Registry, kafka_settings: KafkaSettings
) -> None:
    tenant = await registry.tenant()
    producer = make_producer(kafka_settings, client_id="tests")
    await producer.start()
    try:
        garbage_key = "garbage-" + secrets.token_hex(4)
        await producer.send_and_wait(topics.RC_RAW, b"\x00not json", key=garbage_key.encode())
        unusable = raw(tenant["tenantId"])
        unusable.notification["body"].pop("from")
        await producer.send_and_wait(
            topics.RC_RAW,
            encode(unusable),
            key=unusable.rc_message_id.encode(),
            headers=encode_headers(unusable),
        )
    finally:
        await producer.stop()
    good = raw(tenant["tenantId"])
    await feed(kafka_settings, good)
    [message] = await stored(registry, tenant, 1)
    assert message["rcMessageId"] == good.rc_message_id
    async with TopicTail(kafka_settings, topics.DEAD_LETTER) as tail:

        async def both() -> bool:
            keys = {r.key for r in await tail.poll()}
            return {garbage_key.encode(), unusable.rc_message_id.encode()} <= keys

        await eventually(both)
        origin = next(dict(r.headers) for r in tail.records if r.key == garbage_key.encode())
    assert origin["dlq-origin-topic"] == topics.RC_RAW.encode() and "dlq-error" in origin


async def test_a_nul_in_any_field_never_blocks_the_projection(
    registry: Registry, kafka_settings: KafkaSettings
) -> None:
    """PostgreSQL text cannot hold U+0000: a notification with a NUL in its id is dead-lettered, NULs in
    other fields are replaced, and the rest of the batch is stored (a batch retried forever would stop the
    projection for every tenant)."""
    tenant = await registry.tenant()
    bad_id = raw(tenant["tenantId"], "12345\x006789")
    nul_everywhere = raw(
        tenant["tenantId"],
        subject="a\x00b",
        conversation={"id": "c\x00d"},
        **{"from": {"phoneNumber": "+1555\x00"}},
    )
    good = raw(tenant["tenantId"])
    await feed(kafka_settings, bad_id, nul_everywhere, good)  # one batch, the bad one first
    messages = await stored(registry, tenant, 2)
    assert {m["rcMessageId"] for m in messages} == {nul_everywhere.rc_message_id, good.rc_message_id}
    kept = next(m for m in messages if m["rcMessageId"] == nul_everywhere.rc_message_id)
    assert kept["body"] == "a\ufffdb" and kept["from"] == "+1555\ufffd"
    async with TopicTail(kafka_settings, topics.DEAD_LETTER) as tail:

        async def refused() -> bool:
            return bad_id.rc_message_id.encode() in {r.key for r in await tail.poll()}

        await eventually(refused)


async def test_a_notification_of_a_tenant_this_registry_does_not_know_is_skipped(
    registry: Registry, kafka_settings: KafkaSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """A tenant deleted since ingest accepted its message, or another deployment's on a shared raw topic:
    nothing to store it for. A registry that stored and published whatever the raw topic held would
    re-publish every other deployment's messages as its own."""
    caplog.set_level(logging.INFO, logger="gravity_registry.handlers")
    stranger = ids.new_tenant_id()
    await feed(kafka_settings, raw(stranger))

    def skipped() -> bool:
        return any(stranger in r.getMessage() for r in caplog.records)

    await eventually(skipped, timeout=30)
    conn = await asyncpg.connect(registry.settings.database_url.get_secret_value())
    try:
        assert await conn.fetchval("SELECT count(*) FROM messages WHERE tenant_id = $1", stranger) == 0
    finally:
        await conn.close()
    tenant = await registry.tenant()  # a known tenant's message still goes through
    await feed(kafka_settings, raw(tenant["tenantId"]))
    await stored(registry, tenant, 1)
