"""The projection and the messages API against a real broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager
from tests.fixtures import TopicTail, notification, publish_events
from tests.registry.conftest import ADMIN_TOKEN, Registry, registry_settings
from tests.support import eventually, free_port, wait_ready

from gravity_events import ids, topics
from gravity_events.codec import encode, encode_headers
from gravity_events.kafka import make_producer
from gravity_events.models import RcNotification
from gravity_events.settings import KafkaSettings
from gravity_registry import db
from gravity_registry.app import create_app
from gravity_registry.handlers import stamp_in_gateway_order


def raw(
    tenant_id: str, rc_id: str | None = None, *, received_at: datetime | None = None, **body: Any
) -> RcNotification:
    """What ingest appends for one notification."""
    n = notification("sub-x", rc_id, **body)
    return RcNotification(
        tenant_id=tenant_id,
        subscription_id="sub-x",
        rc_message_id=n["body"]["id"],
        received_at=received_at or ids.utcnow(),
        notification=n,
    )


async def feed(kafka: KafkaSettings, *events: RcNotification) -> None:
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


async def sms_inbound_for(
    kafka: KafkaSettings, message_ids: set[str], since: int, settle_marker: str | None = None
) -> Counter[str]:
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
    """PostgreSQL text cannot hold U+0000. Found by the ingest fuzzer: one notification with a NUL in its id
    stopped the projection for every tenant (the batch was retried forever)."""
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


async def test_filters_limits_and_isolation(registry: Registry, kafka_settings: KafkaSettings) -> None:
    a, b = await registry.tenant("A"), await registry.tenant("B")
    base = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    events = [
        raw(
            a["tenantId"],
            received_at=base + timedelta(seconds=i),
            **({"from": {"phoneNumber": "+1999"}} if i == 2 else {}),
        )
        for i in range(4)
    ]
    b_event = raw(b["tenantId"])
    await feed_in_order(registry, kafka_settings, a, *events)
    await feed(kafka_settings, b_event)
    msgs = await stored(registry, a, 4)
    assert [m["rcMessageId"] for m in msgs] == [e.rc_message_id for e in reversed(events)]
    c = registry.client
    r = await c.get("/v1/sms/messages", params={"from": "+1999"}, headers=a["auth"])
    assert [m["rcMessageId"] for m in r.json()["messages"]] == [events[2].rc_message_id]
    r = await c.get("/v1/sms/messages", params={"to": "+15551234567", "limit": 100}, headers=a["auth"])
    assert len(r.json()["messages"]) == 4
    since, until = (
        ids.format_timestamp(base + timedelta(seconds=1)),
        ids.format_timestamp(base + timedelta(seconds=3)),
    )
    r = await c.get("/v1/sms/messages", params={"since": since, "until": until}, headers=a["auth"])
    assert [m["rcMessageId"] for m in r.json()["messages"]] == [
        events[2].rc_message_id,
        events[1].rc_message_id,
    ]
    assert (await c.get("/v1/sms/messages", params={"direction": "outbound"}, headers=a["auth"])).json() == {
        "messages": [],
        "nextCursor": None,
    }
    for params in (
        {"limit": 0},
        {"limit": 101},
        {"direction": "sideways"},
        {"cursor": "!!"},
        {"since": "yesterday"},
    ):
        r = await c.get("/v1/sms/messages", params=params, headers=a["auth"])
        assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error", params
    # the other tenant's message: 404, never the data
    b_id = ids.message_id_for(b["tenantId"], b_event.rc_message_id)
    await stored(registry, b, 1)
    r = await c.get(f"/v1/sms/messages/{b_id}", headers=a["auth"])
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert b_event.rc_message_id not in r.text
    r = await c.get("/v1/sms/messages", params={"after": b_id}, headers=a["auth"])
    assert r.status_code == 404


async def test_paging_while_messages_arrive_returns_each_once(
    registry: Registry, kafka_settings: KafkaSettings
) -> None:
    tenant = await registry.tenant()
    first = [raw(tenant["tenantId"]) for _ in range(25)]
    await feed(kafka_settings, *first)
    await stored(registry, tenant, 25)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 7}
        if cursor:
            params["cursor"] = cursor
        page = (await registry.client.get("/v1/sms/messages", params=params, headers=tenant["auth"])).json()
        seen += [m["messageId"] for m in page["messages"]]
        pages += 1
        if pages == 1:  # new messages arrive while the client pages
            await feed(kafka_settings, *(raw(tenant["tenantId"]) for _ in range(10)))
            await stored(registry, tenant, 35)
        cursor = page["nextCursor"]
        if cursor is None:
            break
    expected = {ids.message_id_for(tenant["tenantId"], e.rc_message_id) for e in first}
    assert len(seen) == len(set(seen)) and expected <= set(seen)


async def test_after_pages_oldest_first(registry: Registry, kafka_settings: KafkaSettings) -> None:
    tenant = await registry.tenant()
    base = datetime(2026, 6, 1, tzinfo=UTC)
    events = [raw(tenant["tenantId"], received_at=base + timedelta(seconds=i)) for i in range(6)]
    await feed_in_order(registry, kafka_settings, tenant, *events)
    mids = [ids.message_id_for(tenant["tenantId"], e.rc_message_id) for e in events]
    got: list[str] = []
    cursor = None
    while True:
        params = {"after": mids[1], "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await registry.client.get("/v1/sms/messages", params=params, headers=tenant["auth"])).json()
        got += [m["messageId"] for m in page["messages"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert got == mids[2:]


async def test_registry_killed_mid_stream_stores_every_event_exactly_once(
    kafka_settings: KafkaSettings, make_database: Any
) -> None:
    since = now_ms()
    url = await make_database()
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.kafka_bootstrap_servers,
        "KAFKA_ENABLE_IDEMPOTENCE": "false",
        "DATABASE_URL": url,
        "GRAVITY_ADMIN_TOKEN": ADMIN_TOKEN,
        "GRAVITY_REGISTRY_PORT": str(port),
        "GRAVITY_REGISTRY_CONSUMER_GROUP": "registry-kill-" + secrets.token_hex(4),
        "GRAVITY_LOG_LEVEL": "warning",
    }

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "gravity_registry"], env=env)

    proc = start()
    try:
        await wait_ready(f"http://127.0.0.1:{port}", proc=proc)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            tenant = (
                await c.post(
                    "/v1/tenants", json={"name": "k"}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
                )
            ).json()
        events = [raw(tenant["tenantId"]) for _ in range(200)]
        conn = await asyncpg.connect(url)

        async def count() -> int:
            return int(
                await conn.fetchval("SELECT count(*) FROM messages WHERE tenant_id = $1", tenant["tenantId"])
            )

        feeder = asyncio.create_task(feed(kafka_settings, *events))
        await eventually(lambda: _at_least(count, 20), timeout=30, interval=0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        await feeder
        proc = start()
        await eventually(lambda: _at_least(count, 200), timeout=60)
        assert await count() == 200

        async def all_published() -> bool:
            left = await conn.fetchval(
                "SELECT count(*) FROM messages WHERE tenant_id = $1 AND NOT published", tenant["tenantId"]
            )
            return bool(left == 0)

        await eventually(all_published, timeout=30)
        await conn.close()
        mids = {ids.message_id_for(tenant["tenantId"], e.rc_message_id) for e in events}
        counts = await sms_inbound_for(kafka_settings, mids, since)
        assert min(counts.values()) >= 1  # at least once; a repeat is allowed after a crash
    finally:
        proc.kill()
        proc.wait()


async def _at_least(fn: Any, n: int) -> bool:
    return bool(await fn() >= n)


async def _stream_of(kafka: KafkaSettings, tenant_id: str, since: int, count: int) -> list[tuple[str, str]]:
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


async def _oldest_first(registry: Registry, tenant: dict[str, Any]) -> list[tuple[str, str]]:
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
    stream = await _stream_of(kafka_settings, tenant["tenantId"], since, 2)
    assert [m for _, m in stream] == [first_id, late_id]
    assert await _oldest_first(registry, tenant) == stream  # the stream's order and stamps are the API's
    r = await registry.client.get("/v1/sms/messages", params={"after": first_id}, headers=tenant["auth"])
    assert [m["messageId"] for m in r.json()["messages"]] == [late_id]
    assert stream[1][0] >= stream[0][0]  # never earlier than what was already published


async def test_a_notification_of_a_tenant_this_registry_does_not_know_is_skipped(
    registry: Registry, kafka_settings: KafkaSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """A tenant deleted since ingest accepted its message, or another deployment's on a shared raw topic:
    nothing to store it for. Before, every registry stored and published whatever the raw topic held, so
    each registry of a test session re-published the whole session (87,000 records on one partition)."""
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
                return len(await _oldest_first(registry, tenant)) == 240

            await eventually(all_stored, timeout=60)
            stream = await _stream_of(kafka_settings, tenant["tenantId"], since, 240)
            assert len({m for _, m in stream}) == 240
            assert all(a < b for a, b in itertools.pairwise(stream)), "published out of gateway order"
            assert await _oldest_first(registry, tenant) == stream


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
    await _stream_of(kafka_settings, tenant["tenantId"], since, 1)
    await feed(kafka_settings, left)  # the redelivery
    stream = await _stream_of(kafka_settings, tenant["tenantId"], since, 2)
    assert [m for _, m in stream] == [
        ids.message_id_for(tenant["tenantId"], e.rc_message_id) for e in (later, left)
    ]
    assert stream[0] < stream[1]
    assert await _oldest_first(registry, tenant) == stream


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
