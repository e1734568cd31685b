"""What the AsyncAPI document says that no model carries: each topic's key, producers and readers, the
WebSocket handshake and close codes, and the examples. :mod:`gravity_events.asyncapi` assembles these
with the models' schemas and the topics' specs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gravity_events import topics
from gravity_events.codec import SCHEMA_VERSION, TYPE_HEADER, VERSION_HEADER
from gravity_events.ids import APP_ID_RE, KEY_ID_RE, TENANT_ID_RE
from gravity_events.models import SmsInbound

RETRY_GROUP_HEADER = "gravity-fanout-group"
"""Header on fanout's retry records naming the consumer group that scheduled them. The fanout service
sets it; its constant lives there, where this library cannot import it from."""

DEAD_LETTER_HEADERS: dict[str, str] = {
    "dlq-origin-topic": "Topic the record was read from.",
    "dlq-origin-partition": "Its partition (decimal).",
    "dlq-origin-offset": "Its offset in that partition (decimal).",
    "dlq-error": "Why it was set aside: the decode or storage error, cut to 1,000 characters.",
}
"""Headers :func:`gravity_events.kafka.dead_letter` adds to the original record's own headers."""

PUBLIC = {"name": "public", "description": "Part of the external contract: stable, for consumers."}
INTERNAL = {
    "name": "internal",
    "description": "Between Gravity's own services; may change with them. Listed for operators.",
}


@dataclass(frozen=True)
class Topic:
    """What a topic's spec and events do not say: its channel id, key, producers and readers."""

    channel_id: str
    title: str
    key: dict[str, Any]
    """JSON Schema of the record key (its UTF-8 text)."""
    key_field: str | None
    """Payload property the key is a copy of, when it is one (checked against every message's payload)."""
    description: str
    sends: str
    """Who publishes, and how: the ``send`` operation's description."""
    public: bool = False


def id_key(field: str, meaning: str, pattern: str | None = None) -> dict[str, Any]:
    key: dict[str, Any] = {"type": "string", "description": f"The record's `{field}`: {meaning}"}
    if pattern is not None:
        key["pattern"] = pattern
    return key


SMS_INBOUND_DESCRIPTION = """\
The canonical `sms_inbound` event, one record per stored inbound message: the same JSON, byte for \
byte, as the webhook body and the WebSocket frame. This is the topic downstream (analytics) consumers \
read.

- Key = tenantId, for per-tenant order: all of a tenant's records are on one partition, published in \
the gateway's order (`receivedAt`, `messageId`), so a consumer sees each tenant's messages in that order. \
There is no order across tenants.
- At-least-once: a message can be published more than once (a producer retry, a registry restart \
before it recorded the publication), and a repeated copy may come after messages that followed the \
first one. Dedupe by `messageId`: the same messageId is always the same message.
- Headers: `gravity-type` (`sms_inbound`), `gravity-schema-version` (refuse a version newer than you \
know: an incompatible change is a new version, never a silent one) and `gravity-received-at` (the \
message's receivedAt, the first half of the order).
- Unknown payload fields may be added within a version: ignore them.
"""

TOPICS: dict[str, Topic] = {
    topics.RC_RAW: Topic(
        channel_id="rcRaw",
        title="Raw RingCentral notifications",
        key=id_key("rcMessageId", "RingCentral's message id (`body.id` of the notification)."),
        key_field="rcMessageId",
        description=(
            "Verified RingCentral inbound-SMS notifications exactly as RingCentral sent them, with the "
            "tenant resolved from the subscription, before any interpretation. Key = rcMessageId, so "
            "RingCentral's redeliveries of one message land on one partition. Read by the registry, "
            "which stores each message once and publishes it on `gravity.sms.inbound.v1`."
        ),
        sends=(
            "Ingest appends each verified inbound SMS (acks=all) before it answers RingCentral 200; the "
            "registry appends what its backfill finds through RingCentral's message-list API "
            "(`source: backfill`). At-least-once: RingCentral redelivers."
        ),
    ),
    topics.SMS_INBOUND: Topic(
        channel_id="smsInbound",
        title="Inbound SMS events",
        key=id_key(
            "tenantId",
            "all of a tenant's messages share one partition, in the gateway's order.",
            TENANT_ID_RE.pattern,
        ),
        key_field="tenantId",
        description=SMS_INBOUND_DESCRIPTION,
        sends=(
            "The registry publishes each message after storing it (acks=all), each tenant in "
            "(receivedAt, messageId) order. Fanout (webhooks) and realtime (WebSocket) read it too."
        ),
        public=True,
    ),
    topics.SUBSCRIPTIONS: Topic(
        channel_id="registrySubscriptions",
        title="RingCentral subscriptions (compacted)",
        key=id_key("subscriptionId", "RingCentral's subscription id."),
        key_field="subscriptionId",
        description=(
            "Compacted change stream: the RingCentral subscriptions whose notifications ingest accepts, "
            "each with its tenant and the SHA-256 of its verification token (the token never travels). "
            "The latest record of a key is the subscription's current state; ingest replays the topic "
            "from offset 0. Key = subscriptionId."
        ),
        sends="The registry publishes connections made, replaced and deleted (through its outbox).",
    ),
    topics.API_KEYS: Topic(
        channel_id="registryApiKeys",
        title="API keys (compacted)",
        key=id_key("keyId", "the public handle of the key, never its secret.", KEY_ID_RE.pattern),
        key_field="keyId",
        description=(
            "Compacted change stream: API key hashes and their revocations. Realtime replays it from "
            "offset 0 to authenticate sockets and closes the sockets a revoked key opened. Key = keyId."
        ),
        sends="The registry publishes keys created and deleted (through its outbox).",
    ),
    topics.APPS: Topic(
        channel_id="registryApps",
        title="Apps (compacted)",
        key=id_key("appId", "the app.", APP_ID_RE.pattern),
        key_field="appId",
        description=(
            "Compacted change stream: each app's delivery configuration (webhook URL, disabled flag, "
            "encrypted signing secrets). Fanout replays it from offset 0. Key = appId."
        ),
        sends="The registry publishes apps created, changed, disabled and deleted (through its outbox).",
    ),
    topics.DELIVERIES: Topic(
        channel_id="deliveries",
        title="Webhook delivery attempts",
        key=id_key("appId", "the app delivered to.", APP_ID_RE.pattern),
        key_field="appId",
        description=(
            "Every webhook delivery attempt, successful or not, and the disabling of an endpoint that "
            "failed continuously. The registry reads it for `GET /v1/apps/{appId}/deliveries` and to "
            "mark apps disabled. Key = appId."
        ),
        sends="Fanout publishes one record per attempt, and one when it disables an endpoint.",
    ),
    topics.DELIVERY_REQUESTS: Topic(
        channel_id="fanoutRequests",
        title="On-demand delivery requests",
        key=id_key("appId", "the app to deliver to.", APP_ID_RE.pattern),
        key_field="appId",
        description=(
            "Deliveries asked for through `POST /v1/apps/{appId}/deliveries/{messageId}/retry`, carried "
            "out by fanout. Key = appId."
        ),
        sends="The registry publishes each request (through its outbox).",
    ),
    topics.FANOUT_RETRY: Topic(
        channel_id="fanoutRetry",
        title="Fanout retry queue",
        key={
            "description": (
                "`appId`: the app to deliver to; on `retries_finished`, the consumer group that wrote it."
            )
        },
        key_field=None,
        description=(
            "Fanout's durable retry queue: failed deliveries with the time of their next attempt. The "
            "producer picks the partition, one per step of the retry schedule (not by key), so every "
            "record of a partition waits about as long as the others and a partition's head is the next "
            f"one due. Each record names the consumer group that scheduled it (`{RETRY_GROUP_HEADER}`); "
            "another deployment on the same cluster skips it. `retries_finished` lists records of its "
            "partition already worked on though not yet committed, for the copy that takes the partition "
            "over. Key = appId (the group for `retries_finished`)."
        ),
        sends="Fanout publishes a failed delivery's next attempt, to the partition of its retry step.",
    ),
    topics.DEAD_LETTER: Topic(
        channel_id="deadLetter",
        title="Dead letters",
        key={"description": "The original record's key, unchanged (none when it had none)."},
        key_field=None,
        description=(
            "Records a consumer could not decode, or the registry could not store, copied with their "
            "origin in `dlq-*` headers so an operator can inspect and replay them. Key, value and the "
            "original headers are the original record's."
        ),
        sends=(
            "Any Gravity consumer sets aside a record it cannot decode; the registry also sets aside a "
            "message PostgreSQL refuses to store."
        ),
    ),
}

DEAD_LETTER_MESSAGE = "DeadLetterRecord"
CONNECTED_FRAME = "ConnectedFrame"
SMS_FRAME = "SmsInboundFrame"
WS_CHANNEL = "realtimeWebSocket"

EXAMPLE = SmsInbound(
    message_id="msg_a1b2c3d4e5f6",
    from_="+15559876543",
    to="+15551234567",
    body="Yes, I confirm",
    rc_message_id="123456789",
    tenant_id="tenant_abc123def456abcd",
    timestamp=datetime(2026, 3, 1, 14, 30, tzinfo=UTC),
)
EXAMPLE_RECEIVED_AT = datetime(2026, 3, 1, 14, 30, 0, 120_000, tzinfo=UTC)

WS_DESCRIPTION = """\
One tenant's live stream of `sms_inbound` events, served by realtime.

- Handshake: `GET /v1/ws` with `Authorization: Bearer <apiKey>`, or `?token=<apiKey>` for browsers. \
A missing or invalid key is refused with HTTP 401 before the upgrade (close code 4401 where the \
server cannot answer in HTTP).
- Frames: every server frame is one JSON text frame with a `type`. First one `connected` frame, then \
every `sms_inbound` event of the key's tenant, and only of that tenant, as the same JSON as the Kafka \
record and the webhook body, on every connection of the tenant, whichever realtime instance holds it.
- Resume: `?since=<messageId>` first sends the tenant's messages that come after that one in the \
gateway's order (`receivedAt`, `messageId`), oldest first, then the live stream, without gaps or \
duplicates. An unknown messageId, or another tenant's, is refused with HTTP 404 before the upgrade \
(or close code 4404). After any close, reconnect with `since` = the last messageId received.
- Keep-alive: WebSocket pings. A client that does not read is disconnected rather than buffered \
without bound. What a client sends is read and ignored.
- Limits: a configurable number of open sockets per API key (default 100); the next is refused with \
HTTP 429 before the upgrade (or close code 4429). A client frame larger than a few KiB closes the \
socket with 1009.

Close codes: 1000 normal closure; 1008 the client did not read its frames fast enough; 1009 client \
frame too large; 1012 the server is restarting; 1013 history could not be read (try again); 4401 \
invalid, missing or revoked API key (a key deleted through the API closes its sockets within 5 \
seconds); 4404 unknown `since`; 4413 the resume reached its bound of history messages (page the REST \
API from the last messageId received, then reconnect with `since`); 4429 too many open sockets for \
this key.
"""

INFO_DESCRIPTION = f"""\
Gravity SMS turns RingCentral inbound SMS into events. This document describes the Kafka topics \
Gravity publishes and the WebSocket stream its realtime service serves.

Kafka records: the value is the event's JSON (UTF-8, camelCase field names, timestamps ISO 8601 UTC \
with milliseconds and `Z`); the key and every header value are UTF-8 text. Every event record carries \
`{TYPE_HEADER}` (the event's `type`) and `{VERSION_HEADER}` (currently {SCHEMA_VERSION}). Topics tagged \
`public` are the contract for downstream consumers; `internal` ones connect Gravity's own services and \
are listed for operators.

Operations are what Gravity does (`send`), plus the one `receive` a downstream analytics consumer of \
`gravity.sms.inbound.v1` performs.
"""
