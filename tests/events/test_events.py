"""gravity_events: ids, codec, the RingCentral parser, and the committed JSON Schemas."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from gravity_events import ids, ringcentral, topics
from gravity_events.codec import CodecError, decode, encode, encode_headers
from gravity_events.models import (
    ApiKeyActive,
    ApiKeyRevoked,
    RcNotification,
    SmsInbound,
    SubscriptionActive,
)
from gravity_events.schemas import render_schemas

CONTRACT_NOTIFICATION = {
    "uuid": "6242343638330007102",
    "event": "/restapi/v1.0/account/809646016/extension/629893016/message-store/instant?type=SMS",
    "timestamp": "2026-03-01T14:30:00.034Z",
    "subscriptionId": "7e4a7486-8df9-4195-8aef-b8d81d3345f6",
    "ownerId": "629893016",
    "body": {
        "id": "123456789",
        "to": [{"phoneNumber": "+15551234567", "name": "Support", "location": "Orange, CA", "target": True}],
        "from": {"phoneNumber": "+15559876543", "location": "Mountain View, CA"},
        "type": "SMS",
        "creationTime": "2026-03-01T14:30:00.000Z",
        "lastModifiedTime": "2026-03-01T14:30:00.000Z",
        "readStatus": "Unread",
        "priority": "Normal",
        "attachments": [{"id": "123456789", "type": "Text", "contentType": "text/plain"}],
        "direction": "Inbound",
        "availability": "Alive",
        "subject": "Yes, I confirm",
        "messageStatus": "Received",
        "conversation": {"id": "1638233798595111162"},
        "eventType": "Create",
        "owner": {"extensionId": "629893016", "extensionType": "User", "name": "Support"},
    },
}


def test_message_id_is_deterministic_and_in_contract_format() -> None:
    a = ids.message_id_for("tenant_abc123def456abcd", "123456789")
    assert a == ids.message_id_for("tenant_abc123def456abcd", "123456789")
    assert ids.MESSAGE_ID_RE.match(a)
    assert a != ids.message_id_for("tenant_abc123def456abce", "123456789")
    assert a != ids.message_id_for("tenant_abc123def456abcd", "123456788")


def test_random_ids_have_contract_format() -> None:
    assert ids.TENANT_ID_RE.match(ids.new_tenant_id())
    assert ids.APP_ID_RE.match(ids.new_app_id())
    assert ids.KEY_ID_RE.match(ids.new_key_id())
    assert ids.new_tenant_id() != ids.new_tenant_id()


def test_timestamps_are_utc_milliseconds_z() -> None:
    plus_two = timezone(timedelta(hours=2))
    value = datetime(2026, 3, 1, 16, 30, 0, 123456, tzinfo=plus_two)
    assert ids.format_timestamp(value) == "2026-03-01T14:30:00.123Z"
    assert ids.parse_timestamp("2026-03-01T14:30:00.123Z") == datetime(
        2026, 3, 1, 14, 30, 0, 123000, tzinfo=UTC
    )
    with pytest.raises(ValueError, match="naive"):
        ids.format_timestamp(datetime(2026, 3, 1))  # noqa: DTZ001
    with pytest.raises(ValueError, match="offset"):
        ids.parse_timestamp("2026-03-01T14:30:00")


def test_sms_inbound_bytes_match_the_contract_example() -> None:
    event = SmsInbound(
        message_id="msg_a1b2c3d4e5f6",
        from_="+15559876543",
        to="+15551234567",
        body="Yes, I confirm",
        rc_message_id="123456789",
        tenant_id="tenant_abc123def456abcd",
        timestamp=datetime(2026, 3, 1, 14, 30, tzinfo=UTC),
    )
    expected = {
        "type": "sms_inbound",
        "messageId": "msg_a1b2c3d4e5f6",
        "from": "+15559876543",
        "to": "+15551234567",
        "body": "Yes, I confirm",
        "rcMessageId": "123456789",
        "tenantId": "tenant_abc123def456abcd",
        "timestamp": "2026-03-01T14:30:00.000Z",
    }
    raw = encode(event)
    assert raw == orjson.dumps(expected)  # same fields, same order, same rendering
    assert decode(topics.SMS_INBOUND, raw, encode_headers(event)) == event


@pytest.mark.parametrize(
    "event",
    [
        SubscriptionActive(subscription_id="s1", tenant_id="tenant_1", verification_token_sha256="ab"),
        ApiKeyActive(key_id="key_1", tenant_id="tenant_1", key_sha256="cd"),
        ApiKeyRevoked(key_id="key_1", tenant_id="tenant_1"),
        RcNotification(
            tenant_id="tenant_1",
            subscription_id="s1",
            rc_message_id="1",
            received_at=datetime(2026, 3, 1, tzinfo=UTC),
            notification=CONTRACT_NOTIFICATION,
        ),
    ],
)
def test_codec_round_trips_every_topic(event: object) -> None:
    topic = {
        SubscriptionActive: topics.SUBSCRIPTIONS,
        ApiKeyActive: topics.API_KEYS,
        ApiKeyRevoked: topics.API_KEYS,
        RcNotification: topics.RC_RAW,
    }[type(event)]
    assert decode(topic, encode(event), encode_headers(event)) == event  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "headers", "match"),
    [
        (b"not json", [], "not a valid"),
        (b'{"type":"api_key_active"}', [], "not a valid"),
        (b'{"type":"something_else","keyId":"k"}', [], "not a valid"),
        (None, [], "tombstone"),
        (b"{}", [("gravity-schema-version", b"2")], "newer"),
        (b"{}", [("gravity-schema-version", b"x")], "unreadable"),
    ],
)
def test_codec_refuses_invalid_records(
    value: bytes | None, headers: list[tuple[str, bytes]], match: str
) -> None:
    with pytest.raises(CodecError, match=match):
        decode(topics.API_KEYS, value, headers)


def test_codec_refuses_unknown_topic() -> None:
    with pytest.raises(CodecError, match="no events"):
        decode("nope", b"{}")


def test_parser_reads_the_contract_notification() -> None:
    sub, event, body = ringcentral.check_notification_shape(CONTRACT_NOTIFICATION)
    assert sub == CONTRACT_NOTIFICATION["subscriptionId"]
    assert ringcentral.is_inbound_sms_event(event, body)
    sms = ringcentral.extract_inbound_sms(body)
    assert (sms.rc_message_id, sms.from_number, sms.to_number, sms.text) == (
        "123456789",
        "+15559876543",
        "+15551234567",
        "Yes, I confirm",
    )
    assert sms.conversation_id == "1638233798595111162"
    assert ids.format_timestamp(sms.creation_time) == "2026-03-01T14:30:00.000Z"


def test_parser_picks_target_recipient_else_first() -> None:
    body = dict(CONTRACT_NOTIFICATION["body"])  # type: ignore[call-overload]
    body["to"] = [{"phoneNumber": "+1000"}, {"phoneNumber": "+2000", "target": True}]
    assert ringcentral.extract_inbound_sms(body).to_number == "+2000"
    body["to"] = [{"phoneNumber": "+1000"}, {"phoneNumber": "+2000"}]
    assert ringcentral.extract_inbound_sms(body).to_number == "+1000"
    body["conversationId"] = 42
    del body["conversation"]
    assert ringcentral.extract_inbound_sms(body).conversation_id == "42"


@pytest.mark.parametrize(
    "data",
    [
        [],
        "x",
        {"event": "e", "body": {}},
        {"subscriptionId": "s", "body": {}},
        {"subscriptionId": "s", "event": "e"},
        {"subscriptionId": "s", "event": "e", "body": []},
        {"subscriptionId": 5, "event": "e", "body": {}},
    ],
)
def test_shape_check_refuses_non_notifications(data: object) -> None:
    with pytest.raises(ringcentral.NotificationError):
        ringcentral.check_notification_shape(data)


@pytest.mark.parametrize(
    ("field", "value"),
    [("id", None), ("from", "x"), ("to", []), ("to", ["x"]), ("subject", 5), ("creationTime", "yesterday")],
)
def test_extract_refuses_unusable_sms(field: str, value: object) -> None:
    body = dict(CONTRACT_NOTIFICATION["body"])  # type: ignore[call-overload]
    body[field] = value
    with pytest.raises(ringcentral.NotificationError):
        ringcentral.extract_inbound_sms(body)


def test_event_kinds() -> None:
    assert not ringcentral.is_inbound_sms_event(
        "/restapi/v1.0/account/~/extension/~/message-store/instant?type=Fax", {}
    )
    assert not ringcentral.is_inbound_sms_event(
        CONTRACT_NOTIFICATION["event"],  # type: ignore[arg-type]
        {"direction": "Outbound"},
    )
    assert ringcentral.is_renewal_reminder("/restapi/v1.0/subscription/~?threshold=86400&interval=3600")
    assert not ringcentral.is_renewal_reminder(CONTRACT_NOTIFICATION["event"])  # type: ignore[arg-type]


def test_committed_json_schemas_match_the_models(repo_root: Path) -> None:
    directory = repo_root / "libs" / "events" / "schemas"
    rendered = render_schemas()
    committed = {p.name: p.read_text() for p in directory.glob("*.schema.json")}
    assert committed == rendered, "run `make schemas` and commit libs/events/schemas/"
    inbound = json.loads(rendered["gravity.sms.inbound.v1.schema.json"])
    assert set(inbound["properties"]) == {
        "type",
        "messageId",
        "from",
        "to",
        "body",
        "rcMessageId",
        "tenantId",
        "timestamp",
    }
