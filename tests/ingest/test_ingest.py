"""Ingest against a real broker: the contract's checks in order, and the append."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager
from tests.fixtures import (
    TopicTail,
    notification,
    publish_events,
    subscription_active,
    subscription_removed,
)
from tests.support import eventually

from gravity_events import ids, topics
from gravity_events.codec import decode
from gravity_events.models import RcNotification
from gravity_events.settings import KafkaSettings
from gravity_ingest.app import create_app
from gravity_ingest.settings import Settings

URL = "/v1/webhooks/ringcentral"


def _settings(kafka: KafkaSettings, **overrides: object) -> Settings:
    return Settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka.kafka_bootstrap_servers,
        KAFKA_ENABLE_IDEMPOTENCE=kafka.kafka_enable_idempotence,
        **overrides,
    )


@pytest.fixture
async def client(kafka_settings: KafkaSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(_settings(kafka_settings))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as c:
            await eventually(lambda: _ready(c))
            yield c


async def _ready(c: httpx.AsyncClient) -> bool:
    return (await c.get("/readyz")).status_code == 200


@pytest.fixture
async def subscription(kafka_settings: KafkaSettings, client: httpx.AsyncClient) -> tuple[str, str, str]:
    """(tenantId, subscriptionId, token) known to the running ingest."""
    tenant, sub, token = ids.new_tenant_id(), "sub-" + secrets.token_hex(6), secrets.token_urlsafe(32)
    await publish_events(kafka_settings, topics.SUBSCRIPTIONS, (sub, subscription_active(tenant, sub, token)))

    async def accepted() -> bool:
        probe = notification(sub)
        probe["event"] = "/restapi/v1.0/subscription/~?threshold=60&interval=15"
        r = await client.post(URL, json=probe, headers={"Verification-Token": token})
        return r.status_code == 200

    await eventually(accepted)
    return tenant, sub, token


def _error_code(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"])
    return str(body["error"]["code"])


async def test_handshake_echoes_the_token_and_does_nothing_else(client: httpx.AsyncClient) -> None:
    r = await client.post(URL, content=b"not json at all", headers={"Validation-Token": "abc-123"})
    assert r.status_code == 200
    assert r.headers["validation-token"] == "abc-123"
    assert r.headers["content-type"] == "application/json"
    assert r.content == b""


async def test_health(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ok"}


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'"text"',
        b'{"event": "x", "body": {}}',
        b'{"subscriptionId": "s", "event": "e", "body": 3}',
    ],
)
async def test_malformed_or_not_a_notification_is_400(client: httpx.AsyncClient, body: bytes) -> None:
    r = await client.post(URL, content=body, headers={"Verification-Token": "whatever"})
    assert r.status_code == 400 and _error_code(r) == "invalid_notification"


async def test_oversize_is_413_by_length_and_by_stream(client: httpx.AsyncClient) -> None:
    big = b"{" + b" " * (1024 * 1024) + b"}"
    r = await client.post(URL, content=big)
    assert r.status_code == 413 and _error_code(r) == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while reading
        for _ in range(20):
            yield b" " * 65536

    r = await client.post(URL, content=chunks())
    assert r.status_code == 413


async def test_verification_failures_are_401_and_record_nothing(
    client: httpx.AsyncClient, subscription: tuple[str, str, str], kafka_settings: KafkaSettings
) -> None:
    _, sub, token = subscription
    other_tenant, other_sub, other_token = ids.new_tenant_id(), "sub-" + secrets.token_hex(6), "t" * 40
    await publish_events(
        kafka_settings,
        topics.SUBSCRIPTIONS,
        (other_sub, subscription_active(other_tenant, other_sub, other_token)),
    )
    rc_ids = []
    for headers, sub_id in [
        ({}, sub),  # missing token
        ({"Verification-Token": token + "x"}, sub),  # wrong token
        ({"Verification-Token": other_token}, sub),  # another tenant's token
        ({"Verification-Token": token}, "sub-unknown-" + secrets.token_hex(4)),  # unknown subscription
        ({"Verification-Token": ""}, sub),
    ]:
        n = notification(sub_id)
        rc_ids.append(n["body"]["id"])
        r = await client.post(URL, json=n, headers=headers)
        assert r.status_code == 401 and _error_code(r) == "unauthorized"
    marker = notification(sub)  # appended after the refused ones: once it is there, they would be too
    assert (await client.post(URL, json=marker, headers={"Verification-Token": token})).status_code == 200
    async with TopicTail(kafka_settings, topics.RC_RAW) as tail:
        await eventually(lambda: _has_key(tail, marker["body"]["id"]))
        assert not [r for r in tail.records if r.key.decode() in rc_ids]


async def test_verified_sms_is_appended_keyed_by_rc_message_id(
    client: httpx.AsyncClient, subscription: tuple[str, str, str], kafka_settings: KafkaSettings
) -> None:
    tenant, sub, token = subscription
    n = notification(sub)
    r = await client.post(URL, json=n, headers={"Verification-Token": token})
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    async with TopicTail(kafka_settings, topics.RC_RAW) as tail:

        async def found() -> list[object]:
            return [x for x in await tail.poll() if x.key == n["body"]["id"].encode()]

        [record] = await eventually(found)
    headers = dict(record.headers)
    assert headers["gravity-type"] == b"rc_notification" and headers["gravity-schema-version"] == b"1"
    event = decode(topics.RC_RAW, record.value, record.headers)
    assert isinstance(event, RcNotification)
    assert (event.tenant_id, event.subscription_id, event.rc_message_id) == (tenant, sub, n["body"]["id"])
    assert event.notification == n and event.source == "webhook"


async def test_non_sms_notifications_are_acknowledged_not_stored(
    client: httpx.AsyncClient, subscription: tuple[str, str, str], kafka_settings: KafkaSettings
) -> None:
    _, sub, token = subscription
    fax = notification(sub)
    fax["event"] = "/restapi/v1.0/account/~/extension/~/message-store/instant?type=Fax"
    outbound = notification(sub, direction="Outbound")
    reminder = notification(sub)
    reminder["event"] = "/restapi/v1.0/subscription/~?threshold=86400&interval=3600"
    for n in (fax, outbound, reminder):
        r = await client.post(URL, json=n, headers={"Verification-Token": token})
        assert r.status_code == 200
    marker = notification(sub)  # appended after the others: once it is there, they would be too
    assert (await client.post(URL, json=marker, headers={"Verification-Token": token})).status_code == 200
    ignored = {fax["body"]["id"], outbound["body"]["id"], reminder["body"]["id"]}
    async with TopicTail(kafka_settings, topics.RC_RAW) as tail:
        await eventually(lambda: _has_key(tail, marker["body"]["id"]))
        assert not [r for r in tail.records if r.key.decode() in ignored]


async def _has_key(tail: TopicTail, key: str) -> bool:
    return any(r.key == key.encode() for r in await tail.poll())


async def test_unusable_inbound_sms_is_400(
    client: httpx.AsyncClient, subscription: tuple[str, str, str]
) -> None:
    _, sub, token = subscription
    n = notification(sub)
    del n["body"]["from"]
    r = await client.post(URL, json=n, headers={"Verification-Token": token})
    assert r.status_code == 400 and "from" in r.json()["error"]["message"]


async def test_removed_subscription_is_refused_within_5_seconds(
    client: httpx.AsyncClient, subscription: tuple[str, str, str], kafka_settings: KafkaSettings
) -> None:
    tenant, sub, token = subscription
    await publish_events(kafka_settings, topics.SUBSCRIPTIONS, (sub, subscription_removed(tenant, sub)))

    async def refused() -> bool:
        r = await client.post(URL, json=notification(sub), headers={"Verification-Token": token})
        return r.status_code == 401

    await eventually(refused, timeout=5)


async def test_concurrent_duplicates_are_all_acknowledged(
    client: httpx.AsyncClient, subscription: tuple[str, str, str], kafka_settings: KafkaSettings
) -> None:
    """50 copies of one event at once: every POST answers 200 (dedup is the registry's job)."""
    _, sub, token = subscription
    n = orjson.dumps(notification(sub))
    answers = await asyncio.gather(
        *(client.post(URL, content=n, headers={"Verification-Token": token}) for _ in range(50))
    )
    assert [a.status_code for a in answers] == [200] * 50


@pytest.mark.timeout(120)
async def test_broker_down_is_503_and_recovers(tmp_path: Path, kafka_settings: KafkaSettings) -> None:
    from gravity_devstack.kafka import TansuBroker, free_port
    from gravity_events.kafka import ensure_topics

    port = free_port()
    broker = TansuBroker(log=tmp_path / "tansu.log", port=port)
    try:
        own = KafkaSettings(KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers, KAFKA_ENABLE_IDEMPOTENCE=False)
        tenant, sub, token = ids.new_tenant_id(), "sub-down", "x" * 40
        app = create_app(_settings(own, GRAVITY_INGEST_PUBLISH_TIMEOUT=1.0))
        async with LifespanManager(app) as manager:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app), base_url="http://ingest"
            ) as c:
                await publish_events(
                    own, topics.SUBSCRIPTIONS, (sub, subscription_active(tenant, sub, token))
                )

                async def status() -> int:
                    r = await c.post(URL, json=notification(sub), headers={"Verification-Token": token})
                    return r.status_code

                await eventually(lambda: _is(status, 200))
                broker.stop()
                r = await c.post(URL, json=notification(sub), headers={"Verification-Token": token})
                assert r.status_code == 503 and _error_code(r) == "broker_unavailable"
                broker = TansuBroker(log=tmp_path / "tansu2.log", port=port)
                await ensure_topics(own)  # the memory engine starts empty
                await eventually(lambda: _is(status, 200), timeout=30)
    finally:
        broker.stop()


async def _is(fn, expected: int) -> bool:  # type: ignore[no-untyped-def]
    return await fn() == expected
