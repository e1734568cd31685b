"""Ingest against a real broker: the contract's checks in order, and the append."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager
from tests.support import (
    TopicTail,
    assert_error,
    eventually,
    notification,
    publish_events,
    serve,
    subscription_active,
    subscription_removed,
    wait_ready,
)

from gravity_events import ids, topics
from gravity_events.codec import decode
from gravity_events.kafka import ensure_topics
from gravity_events.models import RcNotification
from gravity_events.settings import KafkaSettings
from gravity_ingest.app import IngestApp, create_app
from gravity_ingest.settings import Settings

URL = "/v1/webhooks/ringcentral"
RENEWAL_REMINDER = "/restapi/v1.0/subscription/~?threshold=60&interval=15"

T = TypeVar("T")
Sub = tuple[str, str, str]  # (tenantId, subscriptionId, token)


async def _eventually(fn: Callable[[], Awaitable[T]], *, timeout: float = 10.0) -> T:
    """tests.support.eventually, typed for async callables."""
    return cast(T, await eventually(cast(Any, fn), timeout=timeout))


def _settings(kafka: KafkaSettings, **overrides: Any) -> Settings:
    return Settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka.kafka_bootstrap_servers,
        KAFKA_ENABLE_IDEMPOTENCE=kafka.kafka_enable_idempotence,
        **overrides,
    )


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingest")


@pytest.fixture
async def client(kafka_settings: KafkaSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(_settings(kafka_settings))
    async with LifespanManager(app) as manager, _client(manager.app) as c:
        await wait_ready(client=c, timeout=10)
        yield c


def _new_subscription() -> Sub:
    return ids.new_tenant_id(), "sub-" + secrets.token_hex(6), secrets.token_urlsafe(32)


async def _post(c: httpx.AsyncClient, n: dict[str, Any], token: str | None) -> httpx.Response:
    headers = {"Verification-Token": token} if token is not None else {}
    return await c.post(URL, content=orjson.dumps(n), headers=headers)


async def _accepts(c: httpx.AsyncClient, sub: str, token: str) -> bool:
    """A verified renewal reminder answers 200 and stores nothing: a side-effect-free probe."""
    probe = notification(sub)
    probe["event"] = RENEWAL_REMINDER
    return (await _post(c, probe, token)).status_code == 200


@pytest.fixture
async def subscription(kafka_settings: KafkaSettings, client: httpx.AsyncClient) -> Sub:
    """A subscription published the way the registry does, once the running ingest accepts it."""
    tenant, sub, token = _new_subscription()
    await publish_events(kafka_settings, topics.SUBSCRIPTIONS, (sub, subscription_active(tenant, sub, token)))
    await _eventually(lambda: _accepts(client, sub, token))
    return tenant, sub, token


async def _keys_on_raw(tail: TopicTail) -> list[bytes]:
    return [r.key for r in await tail.poll()]


async def _appended_after(kafka: KafkaSettings, marker_rc_id: str) -> set[str]:
    """Every rcMessageId on the raw topic, read once a marker posted last is there (so anything
    appended before it would be there too)."""
    async with TopicTail(kafka, topics.RC_RAW) as tail:
        await _eventually(lambda: _has_key(tail, marker_rc_id))
        return {r.key.decode() for r in tail.records}


async def _has_key(tail: TopicTail, key: str) -> bool:
    return key.encode() in await _keys_on_raw(tail)


# -- before the lifespan / readiness -------------------------------------------------------------


async def test_before_startup_not_ready_but_handshake_answers(kafka_settings: KafkaSettings) -> None:
    app = create_app(_settings(kafka_settings))  # lifespan not entered: nothing replayed, no producer
    async with _client(app) as c:
        r = await c.get("/readyz")
        assert r.status_code == 503
        assert r.json() == {
            "status": "unavailable",
            "checks": {"subscriptions": "replaying", "producer": "starting"},
        }
        assert (await c.get("/healthz")).json() == {"status": "ok"}
        r = await c.post(URL, headers={"Validation-Token": "early"})
        assert r.status_code == 200 and r.headers["validation-token"] == "early"
        # Tokens cannot be judged yet: a retriable 503, never a 401 RingCentral would hold against us.
        r = await _post(c, notification("sub-x"), "some-token")
        assert_error(r, 503, "not_ready")


async def test_ready_only_after_the_stream_was_replayed(kafka_settings: KafkaSettings) -> None:
    """A subscription already on the topic is in force the moment /readyz says ok."""
    tenant, sub, token = _new_subscription()
    other_tenant, removed_sub, removed_token = _new_subscription()
    await publish_events(
        kafka_settings,
        topics.SUBSCRIPTIONS,
        (sub, subscription_active(tenant, sub, token)),
        (removed_sub, subscription_active(other_tenant, removed_sub, removed_token)),
        (removed_sub, subscription_removed(other_tenant, removed_sub)),
    )
    app = create_app(_settings(kafka_settings))
    async with LifespanManager(app) as manager, _client(manager.app) as c:
        await wait_ready(client=c, timeout=10)
        assert await _accepts(c, sub, token)  # no waiting: replayed before ready
        probe = notification(removed_sub)
        probe["event"] = RENEWAL_REMINDER
        assert (await _post(c, probe, removed_token)).status_code == 401


async def test_health(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ok"}


async def test_other_paths_and_methods_answer_in_the_error_shape(client: httpx.AsyncClient) -> None:
    r = await client.get(URL)
    assert_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "POST"
    r = await client.get("/v1/nothing-here")
    assert_error(r, 404, "not_found")


# -- 1. handshake ---------------------------------------------------------------------------------


async def test_handshake_echoes_the_token_and_does_nothing_else(client: httpx.AsyncClient) -> None:
    """Answered first: a bad body, no Verification-Token and even an oversize declaration don't matter."""
    for content, extra in [
        (b"not json at all", {}),
        (b"", {}),
        (b'{"subscriptionId": "s", "event": "e", "body": {}}', {"Verification-Token": "wrong"}),
    ]:
        r = await client.post(URL, content=content, headers={"Validation-Token": "abc-123", **extra})
        assert r.status_code == 200
        assert r.headers["validation-token"] == "abc-123"
        assert r.headers["content-type"] == "application/json"
        assert r.content == b""


async def test_handshake_over_real_http_is_fast(kafka_settings: KafkaSettings) -> None:
    async with serve(create_app(_settings(kafka_settings))) as port:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            started = time.perf_counter()
            r = await c.post(URL, headers={"Validation-Token": "tok-" + "x" * 60})
            elapsed = time.perf_counter() - started
    assert r.status_code == 200 and r.headers["validation-token"] == "tok-" + "x" * 60
    assert r.content == b"" and r.headers["content-type"] == "application/json"
    assert elapsed < 0.5


# -- 2. size --------------------------------------------------------------------------------------


async def test_oversize_is_413_by_length_and_by_stream(client: httpx.AsyncClient) -> None:
    big = b"{" + b" " * (1024 * 1024) + b"}"
    r = await client.post(URL, content=big)
    assert_error(r, 413, "payload_too_large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while reading
        for _ in range(20):
            yield b" " * 65536

    r = await client.post(URL, content=chunks())
    assert_error(r, 413, "payload_too_large")


async def test_exactly_the_limit_is_not_oversize(client: httpx.AsyncClient) -> None:
    body = b'{"x": "' + b"a" * (1024 * 1024 - 9) + b'"}'
    assert len(body) == 1024 * 1024
    r = await client.post(URL, content=body, headers={"Verification-Token": "t"})
    assert_error(r, 400, "invalid_notification")


class _CountingReceive:
    """An ASGI receive that hands out ``chunks`` and counts the bytes the app pulled."""

    def __init__(self, chunk: bytes, count: int) -> None:
        self.chunk, self.left, self.pulled = chunk, count, 0

    async def __call__(self) -> dict[str, Any]:
        self.left -= 1
        self.pulled += len(self.chunk)
        return {"type": "http.request", "body": self.chunk, "more_body": self.left > 0}


async def _call_webhook(
    app: IngestApp, receive: _CountingReceive, headers: list[tuple[bytes, bytes]]
) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": URL, "headers": headers, "query_string": b""}
    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def test_oversize_reads_no_more_than_the_limit(kafka_settings: KafkaSettings) -> None:
    app = create_app(_settings(kafka_settings, GRAVITY_INGEST_MAX_BODY_BYTES=10_000))
    declared = _CountingReceive(b" " * 1000, 50)
    status, body = await _call_webhook(app, declared, [(b"content-length", b"50000")])
    assert status == 413 and declared.pulled == 0  # refused on the declaration, nothing read
    assert orjson.loads(body)["error"]["code"] == "payload_too_large"
    streamed = _CountingReceive(b" " * 1000, 50)  # chunked: no Content-Length
    status, _ = await _call_webhook(app, streamed, [(b"transfer-encoding", b"chunked")])
    assert status == 413 and streamed.pulled <= 10_000 + 1000  # stopped at the first chunk past the limit


async def test_oversize_over_real_http_is_refused_before_the_body_is_sent(
    kafka_settings: KafkaSettings,
) -> None:
    async with serve(create_app(_settings(kafka_settings))) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(
                f"POST {URL} HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/json\r\n"
                f"Content-Length: {50 * 1024 * 1024}\r\n\r\n".encode()
            )
            await writer.drain()
            status_line = await asyncio.wait_for(reader.readline(), 5)  # no body bytes were sent
        finally:
            writer.close()
    assert status_line.startswith(b"HTTP/1.1 413")


# -- 3. shape -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"\xff\xfe",
        b"[]",
        b'"text"',
        b"42",
        b"null",
        b'{"event": "x", "body": {}}',
        b'{"subscriptionId": "s", "body": {}}',
        b'{"subscriptionId": "s", "event": "e"}',
        b'{"subscriptionId": "s", "event": "e", "body": 3}',
        b'{"subscriptionId": 7, "event": "e", "body": {}}',
    ],
)
async def test_malformed_or_not_a_notification_is_400(client: httpx.AsyncClient, body: bytes) -> None:
    r = await client.post(URL, content=body, headers={"Verification-Token": "whatever"})
    assert_error(r, 400, "invalid_notification")


async def test_shape_is_checked_before_verification(client: httpx.AsyncClient) -> None:
    r = await client.post(URL, content=b"{oops")  # no Verification-Token either
    assert_error(r, 400, "invalid_notification")


# -- 4. verification ------------------------------------------------------------------------------


async def test_verification_failures_are_401_and_record_nothing(
    client: httpx.AsyncClient, subscription: Sub, kafka_settings: KafkaSettings
) -> None:
    _, sub, token = subscription
    other_tenant, other_sub, other_token = _new_subscription()
    await publish_events(
        kafka_settings,
        topics.SUBSCRIPTIONS,
        (other_sub, subscription_active(other_tenant, other_sub, other_token)),
    )
    await _eventually(lambda: _accepts(client, other_sub, other_token))
    refused = []
    for token_sent, sub_id in [
        (None, sub),  # missing token
        ("", sub),  # empty token
        (token + "x", sub),  # wrong token
        (token[:-1], sub),  # a prefix of the right one
        (other_token, sub),  # another tenant's token
        (token, other_sub),  # this token on the other tenant's subscription
        (token, "sub-unknown-" + secrets.token_hex(4)),  # unknown subscription
    ]:
        n = notification(sub_id)
        refused.append(n["body"]["id"])
        r = await _post(client, n, token_sent)
        assert r.status_code == 401, (token_sent, sub_id)
        assert_error(r, 401, "unauthorized")
    marker = notification(sub)
    assert (await _post(client, marker, token)).status_code == 200
    assert not set(refused) & await _appended_after(kafka_settings, marker["body"]["id"])


async def test_removed_subscription_is_refused_within_5_seconds(
    client: httpx.AsyncClient, subscription: Sub, kafka_settings: KafkaSettings
) -> None:
    tenant, sub, token = subscription
    await publish_events(kafka_settings, topics.SUBSCRIPTIONS, (sub, subscription_removed(tenant, sub)))
    started = time.monotonic()

    async def refused() -> bool:
        return (await _post(client, notification(sub), token)).status_code == 401

    await _eventually(refused, timeout=5)
    assert time.monotonic() - started < 5


async def test_a_new_token_replaces_the_old_within_5_seconds(
    client: httpx.AsyncClient, subscription: Sub, kafka_settings: KafkaSettings
) -> None:
    tenant, sub, old_token = subscription
    new_token = secrets.token_urlsafe(32)
    await publish_events(
        kafka_settings, topics.SUBSCRIPTIONS, (sub, subscription_active(tenant, sub, new_token))
    )
    await _eventually(lambda: _accepts(client, sub, new_token), timeout=5)
    assert not await _accepts(client, sub, old_token)


# -- 5. kind --------------------------------------------------------------------------------------


async def test_non_sms_notifications_are_acknowledged_not_stored(
    client: httpx.AsyncClient, subscription: Sub, kafka_settings: KafkaSettings
) -> None:
    _, sub, token = subscription
    fax = notification(sub)
    fax["event"] = "/restapi/v1.0/account/~/extension/~/message-store/instant?type=Fax"
    outbound = notification(sub, direction="Outbound")
    store = notification(sub)
    store["event"] = "/restapi/v1.0/account/809646016/extension/629893016/message-store"
    reminder = notification(sub)
    reminder["event"] = "/restapi/v1.0/subscription/~?threshold=86400&interval=3600"
    for n in (fax, outbound, store, reminder):
        r = await _post(client, n, token)
        assert r.status_code == 200 and r.json() == {"status": "ok"}
    marker = notification(sub)
    assert (await _post(client, marker, token)).status_code == 200
    ignored = {n["body"]["id"] for n in (fax, outbound, store, reminder)}
    assert not ignored & await _appended_after(kafka_settings, marker["body"]["id"])


async def test_unusable_inbound_sms_is_400(client: httpx.AsyncClient, subscription: Sub) -> None:
    _, sub, token = subscription
    n = notification(sub)
    del n["body"]["from"]
    r = await _post(client, n, token)
    assert_error(r, 400, "invalid_notification")
    assert "from" in r.json()["error"]["message"]


@pytest.mark.parametrize("rc_id", ["123\x00456", "1" * 129, "12\n34"])
async def test_an_id_that_is_not_a_ringcentral_id_is_400(
    client: httpx.AsyncClient, subscription: Sub, rc_id: str
) -> None:
    _, sub, token = subscription
    r = await _post(client, notification(sub, rc_id), token)
    assert_error(r, 400, "invalid_notification")
    assert "body.id" in r.json()["error"]["message"]


async def test_absurdly_nested_inbound_sms_is_400(client: httpx.AsyncClient, subscription: Sub) -> None:
    """Nesting the consumers' parser would refuse is stopped here, not dead-lettered downstream."""
    _, sub, token = subscription
    n = orjson.dumps(notification(sub))
    deep = n[:-1] + b',"extra":' + b"[" * 220 + b"]" * 220 + b"}"
    r = await client.post(URL, content=deep, headers={"Verification-Token": token})
    assert_error(r, 400, "invalid_notification")


# -- 6. append ------------------------------------------------------------------------------------


async def test_verified_sms_is_appended_keyed_by_rc_message_id(
    client: httpx.AsyncClient, subscription: Sub, kafka_settings: KafkaSettings
) -> None:
    tenant, sub, token = subscription
    n = notification(sub)
    raw = orjson.dumps(n, option=orjson.OPT_INDENT_2)  # as sent, whitespace and all
    # A number beyond 64 bits (orjson cannot write one) is kept digit for digit, never via a float.
    raw = raw[:-2] + b',\n  "huge": 123456789012345678901234567890\n}'
    n["huge"] = 123456789012345678901234567890
    before = ids.utcnow()
    r = await client.post(URL, content=raw, headers={"Verification-Token": token})
    after = ids.utcnow()
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    async with TopicTail(kafka_settings, topics.RC_RAW) as tail:

        async def found() -> list[Any]:
            return [x for x in await tail.poll() if x.key == n["body"]["id"].encode()]

        [record] = await _eventually(found)
    headers = dict(record.headers)
    assert headers["gravity-type"] == b"rc_notification" and headers["gravity-schema-version"] == b"1"
    event = decode(topics.RC_RAW, record.value, record.headers)
    assert isinstance(event, RcNotification)
    assert (event.tenant_id, event.subscription_id, event.rc_message_id) == (tenant, sub, n["body"]["id"])
    assert event.notification == n and event.source == "webhook"
    assert before <= event.received_at <= after
    assert raw in record.value  # RingCentral's bytes, untouched


async def test_concurrent_duplicates_are_all_acknowledged_and_appended(
    client: httpx.AsyncClient, subscription: Sub, kafka_settings: KafkaSettings
) -> None:
    """50 copies of one event at once: every POST answers 200 (dedup is the registry's job)."""
    _, sub, token = subscription
    n = notification(sub)
    body = orjson.dumps(n)
    answers = await asyncio.gather(
        *(client.post(URL, content=body, headers={"Verification-Token": token}) for _ in range(50))
    )
    assert [a.status_code for a in answers] == [200] * 50
    key = n["body"]["id"].encode()
    async with TopicTail(kafka_settings, topics.RC_RAW) as tail:

        async def fifty() -> bool:
            return (await _keys_on_raw(tail)).count(key) >= 50

        await _eventually(fifty)
        assert [r.key for r in tail.records].count(key) == 50


# -- broker outage (its own broker) ----------------------------------------------------------------


async def _status(c: httpx.AsyncClient, sub: str, token: str) -> int:
    return (await _post(c, notification(sub), token)).status_code


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_broker_down_is_503_and_recovers(tmp_path: Path) -> None:
    from gravity_devstack.kafka import TansuBroker, free_port

    port = free_port()
    broker = TansuBroker(log=tmp_path / "tansu.log", port=port)
    try:
        own = KafkaSettings(KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers, KAFKA_ENABLE_IDEMPOTENCE=False)
        tenant, sub, token = _new_subscription()
        app = create_app(_settings(own, GRAVITY_INGEST_PUBLISH_TIMEOUT=1.0))
        async with LifespanManager(app) as manager, _client(manager.app) as c:
            await wait_ready(client=c, timeout=30)
            await publish_events(own, topics.SUBSCRIPTIONS, (sub, subscription_active(tenant, sub, token)))
            await _eventually(lambda: _accepts(c, sub, token))
            assert await _status(c, sub, token) == 200

            broker.stop()
            started = time.monotonic()
            r = await _post(c, notification(sub), token)
            assert_error(r, 503, "broker_unavailable")
            assert time.monotonic() - started < 3  # the publish timeout, not the client's patience
            # Verification and the other checks still answer without the broker.
            assert (await _post(c, notification(sub), "wrong")).status_code == 401

            broker = TansuBroker(log=tmp_path / "tansu2.log", port=port)
            await ensure_topics(own)  # the memory engine starts empty: topics and subscription again
            await publish_events(own, topics.SUBSCRIPTIONS, (sub, subscription_active(tenant, sub, token)))
            await _eventually(lambda: _is(_status(c, sub, token), 200), timeout=30)
    finally:
        broker.stop()


async def _is(status: Awaitable[int], expected: int) -> bool:
    return await status == expected


# -- settings -------------------------------------------------------------------------------------


async def test_the_linger_setting_reaches_the_producer(kafka_settings: KafkaSettings) -> None:
    """``GRAVITY_INGEST_LINGER_MS`` is how long a raw record may wait for others: a lone notification's
    answer, which waits for the broker's acknowledgement, comes no sooner."""
    app = create_app(_settings(kafka_settings, GRAVITY_INGEST_LINGER_MS=500))
    async with LifespanManager(app) as manager, _client(manager.app) as c:
        await wait_ready(client=c, timeout=10)
        tenant, sub, token = _new_subscription()
        await publish_events(
            kafka_settings, topics.SUBSCRIPTIONS, (sub, subscription_active(tenant, sub, token))
        )
        await _eventually(lambda: _accepts(c, sub, token))
        started = time.monotonic()
        assert (await _post(c, notification(sub), token)).status_code == 200
        assert time.monotonic() - started >= 0.45, "the record waited its linger before it was sent"
