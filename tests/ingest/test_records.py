"""Ingest's pieces without HTTP or a broker: the raw record it writes and the subscription table."""

from __future__ import annotations

import asyncio
import hashlib

import orjson
import pytest
from tests.support import notification, subscription_active, subscription_removed

from gravity_events import ids, topics
from gravity_events.codec import decode, encode
from gravity_events.kafka import Envelope
from gravity_events.models import Event, RcNotification
from gravity_ingest.errors import NotReady, Unauthorized
from gravity_ingest.handlers import MAX_NESTING, SubscriptionTable, _nesting_exceeds, encode_raw_record


def _record(**fields: object) -> tuple[RcNotification, bytes]:
    n = notification("sub-1")
    raw = orjson.dumps(n)
    model = RcNotification(
        tenant_id="tenant_0123456789abcdef",
        subscription_id="sub-1",
        rc_message_id=n["body"]["id"],
        received_at=ids.utcnow(),
        source="webhook",
        notification=n,
    )
    return model, raw


def test_raw_record_is_what_the_codec_writes() -> None:
    """The spliced encoding and gravity_events.codec.encode stay byte-identical for a compact body."""
    model, raw = _record()
    value = encode_raw_record(
        tenant_id=model.tenant_id,
        subscription_id=model.subscription_id,
        rc_message_id=model.rc_message_id,
        received_at=model.received_at,
        raw_notification=raw,
    )
    assert value == encode(model)
    assert decode(topics.RC_RAW, value) == model


def test_raw_record_keeps_the_notification_bytes_as_sent() -> None:
    model, _ = _record()
    raw = orjson.dumps(model.notification, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    value = encode_raw_record(
        tenant_id=model.tenant_id,
        subscription_id=model.subscription_id,
        rc_message_id=model.rc_message_id,
        received_at=model.received_at,
        raw_notification=raw,
    )
    assert raw in value
    assert decode(topics.RC_RAW, value) == model


@pytest.mark.parametrize(("depth", "exceeds"), [(0, False), (MAX_NESTING, False), (MAX_NESTING + 1, True)])
def test_nesting_limit(depth: int, exceeds: bool) -> None:
    value: object = 1
    for _ in range(depth):
        value = [value]
    assert _nesting_exceeds(value, MAX_NESTING) is exceeds


def _envelope(event: Event) -> Envelope:
    return Envelope(topics.SUBSCRIPTIONS, 0, 0, None, 0, {}, event)


async def test_subscription_table_follows_the_stream() -> None:
    table = SubscriptionTable()
    table.apply(_envelope(subscription_active("tenant_a", "sub-a", "token-a")))
    with pytest.raises(NotReady):
        table.verify("sub-a", "token-a")  # not replayed yet: cannot judge
    table.ready.set()
    assert table.verify("sub-a", "token-a") == "tenant_a"
    for token in (None, "", "token-b", "token-a "):
        with pytest.raises(Unauthorized):
            table.verify("sub-a", token)
    with pytest.raises(Unauthorized):
        table.verify("sub-b", "token-a")
    table.apply(_envelope(subscription_active("tenant_a", "sub-a", "token-2")))
    with pytest.raises(Unauthorized):
        table.verify("sub-a", "token-a")
    assert table.verify("sub-a", "token-2") == "tenant_a"
    table.apply(_envelope(subscription_removed("tenant_a", "sub-a")))
    with pytest.raises(Unauthorized):
        table.verify("sub-a", "token-2")
    assert len(table) == 0


async def test_subscription_table_uses_the_readers_event() -> None:
    ready = asyncio.Event()
    table = SubscriptionTable(ready)
    digest = hashlib.sha256(b"t").hexdigest()
    assert subscription_active("tenant_a", "s", "t").verification_token_sha256 == digest
    table.apply(_envelope(subscription_active("tenant_a", "s", "t")))
    ready.set()
    assert table.verify("s", "t") == "tenant_a"
