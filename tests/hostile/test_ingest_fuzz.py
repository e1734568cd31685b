"""Hostile input at the ingest endpoint and in the RingCentral parser (hypothesis).

Random bytes, random JSON, deep nesting, huge strings, wrong types, unicode, duplicate keys and wrong
content types, with and without the right Verification-Token: ingest answers only 200, 400, 401 or 413,
never a 5xx, and whatever it appends to the raw topic is a well-formed inbound SMS. The parser, fed the
same, either returns a message or raises NotificationError, never anything else.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support import (
    TopicTail,
    eventually,
    notification,
    publish_events,
    serve_in_thread,
    subscription_active,
)

from gravity_events import topics
from gravity_events.codec import CodecError, decode
from gravity_events.models import RcNotification
from gravity_events.ringcentral import (
    NotificationError,
    check_notification_shape,
    extract_inbound_sms,
    is_inbound_sms_event,
)
from gravity_events.settings import KafkaSettings
from gravity_ingest.app import create_app
from gravity_ingest.settings import Settings

TENANT = "tenant_" + secrets.token_hex(8)
SUBSCRIPTION = "sub-fuzz-" + secrets.token_hex(4)
TOKEN = secrets.token_urlsafe(32)
ALLOWED = {200, 400, 401, 413}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
body_paths = st.sampled_from(
    [
        ("uuid",),
        ("event",),
        ("subscriptionId",),
        ("body",),
        ("body", "id"),
        ("body", "from"),
        ("body", "from", "phoneNumber"),
        ("body", "to"),
        ("body", "subject"),
        ("body", "creationTime"),
        ("body", "direction"),
        ("body", "type"),
        ("body", "conversation"),
    ]
)


@st.composite
def mutated_notifications(draw: st.DrawFn) -> bytes:
    """The contract's notification with one field replaced by anything (or removed)."""
    data: dict[str, Any] = notification(SUBSCRIPTION)
    path = draw(body_paths)
    target = data
    for key in path[:-1]:
        target = target[key]
    if draw(st.booleans()):
        target.pop(path[-1], None)
    else:
        target[path[-1]] = draw(json_values | st.text(min_size=1000, max_size=5000))
    return orjson.dumps(data)


def _nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


bodies = st.one_of(
    st.binary(max_size=2000),
    json_values.map(lambda v: json.dumps(v).encode()),
    mutated_notifications(),
    st.integers(min_value=1, max_value=5000).map(_nested),
    st.just(
        b'{"subscriptionId": "x", "subscriptionId": "' + SUBSCRIPTION.encode() + b'", "event": 1, "body": {}}'
    ),
    st.text(max_size=300).map(
        lambda t: json.dumps({"subscriptionId": SUBSCRIPTION, "event": t, "body": {"id": t}}).encode()
    ),
)
tokens = st.one_of(
    st.just(TOKEN),
    st.none(),
    st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=60),
)
content_types = st.sampled_from(
    [
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "",
        "application/json; charset=latin-1",
    ]
)


@pytest.fixture(scope="module")
async def known_subscription(kafka_settings: KafkaSettings) -> str:
    await publish_events(
        kafka_settings, topics.SUBSCRIPTIONS, (SUBSCRIPTION, subscription_active(TENANT, SUBSCRIPTION, TOKEN))
    )
    return SUBSCRIPTION


@pytest.fixture(scope="module")
def ingest_url(kafka_settings: KafkaSettings, known_subscription: str) -> Iterator[str]:
    app = create_app(
        Settings(
            KAFKA_BOOTSTRAP_SERVERS=kafka_settings.kafka_bootstrap_servers,
            KAFKA_ENABLE_IDEMPOTENCE=kafka_settings.kafka_enable_idempotence,
        )
    )
    with serve_in_thread(app) as port:
        url = f"http://127.0.0.1:{port}/v1/webhooks/ringcentral"
        with httpx.Client(timeout=10) as client:
            valid = orjson.dumps(notification(known_subscription))
            for _ in range(300):  # bounded readiness poll: the subscription stream is replayed
                r = client.post(url, content=valid, headers={"Verification-Token": TOKEN})
                if r.status_code == 200:
                    break
                import time

                time.sleep(0.05)
            else:
                raise RuntimeError(f"ingest never accepted the fuzz subscription: {r.status_code}")
        yield url


@given(body=bodies, token=tokens, content_type=content_types)
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
def test_ingest_answers_only_200_400_401_413(
    ingest_url: str, body: bytes, token: str | None, content_type: str
) -> None:
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Verification-Token"] = token
    with httpx.Client(timeout=10) as client:
        r = client.post(ingest_url, content=body, headers=headers)
    assert r.status_code in ALLOWED, (r.status_code, r.text[:300])
    if r.status_code != 200:
        assert r.headers["content-type"] == "application/json", (r.status_code, r.headers, r.content[:200])
        assert set(r.json()) == {"error"} and r.json()["error"]["code"]


def test_huge_bodies_are_413(ingest_url: str) -> None:
    with httpx.Client(timeout=30) as client:
        big = orjson.dumps(notification(SUBSCRIPTION, subject="x" * (2 * 1024 * 1024)))
        assert client.post(ingest_url, content=big, headers={"Verification-Token": TOKEN}).status_code == 413

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
            for _ in range(40):
                yield b" " * 65536

        assert (
            client.post(ingest_url, content=chunks(), headers={"Verification-Token": TOKEN}).status_code
            == 413
        )


async def test_only_well_formed_sms_reached_the_raw_topic(
    kafka_settings: KafkaSettings, ingest_url: str
) -> None:
    """Runs after the fuzzing above (same module): every appended record of the fuzz tenant parses."""
    async with TopicTail(kafka_settings, topics.RC_RAW) as tail:

        async def some() -> list[RcNotification]:
            found = [_decoded(r) for r in await tail.poll()]
            return [e for e in found if isinstance(e, RcNotification) and e.tenant_id == TENANT]

        records = await eventually(some, timeout=10)
    for record in records:
        event, body = record.notification["event"], record.notification["body"]
        assert is_inbound_sms_event(event, body)
        assert extract_inbound_sms(body).rc_message_id == record.rc_message_id


def _decoded(record: Any) -> object:
    """The event, or None for a record another test wrote as garbage on purpose (ingest never does)."""
    try:
        return decode(topics.RC_RAW, record.value, record.headers)
    except CodecError:
        return None


@given(data=json_values | mutated_notifications().map(orjson.loads))
@settings(max_examples=500, deadline=None)
def test_parser_returns_a_message_or_a_notification_error(data: Any) -> None:
    try:
        _, event, body = check_notification_shape(data)
        if is_inbound_sms_event(event, body):
            sms = extract_inbound_sms(body)
            assert sms.rc_message_id and sms.from_number and sms.to_number
            assert "\x00" not in sms.rc_message_id  # an id PostgreSQL cannot store blocked the projection
    except NotificationError:
        pass
