"""The AsyncAPI 3.0 document of Gravity's Kafka topics and of the realtime WebSocket channel.

Built from what the services use, so it cannot describe a shape the code does not produce: every
channel is a :data:`~gravity_events.topics.ALL_TOPICS` spec (address, partitions, topic configuration
in the Kafka channel binding), every message payload is an event model's serialization JSON Schema (the
same pydantic schemas as ``schemas/*.schema.json``, collected once under ``components.schemas``), and the
record headers are the codec's. What no model carries is written here from the external contract: what
each record key means, the WebSocket handshake, its ``connected`` frame and its close codes.

Operations say what Gravity does: ``send`` on every topic it publishes and on the WebSocket, and one
``receive``, the downstream (analytics) consumer of ``gravity.sms.inbound.v1``.

:func:`render_asyncapi` is written to ``schemas/asyncapi.yaml`` by ``python -m gravity_events.schemas``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic.json_schema import models_json_schema

from gravity_events import topics
from gravity_events.codec import (
    RECEIVED_AT_HEADER,
    SCHEMA_VERSION,
    TOPIC_EVENTS,
    TYPE_HEADER,
    VERSION_HEADER,
    encode_headers,
)
from gravity_events.ids import APP_ID_RE, KEY_ID_RE, MESSAGE_ID_RE, TENANT_ID_RE, format_timestamp
from gravity_events.models import Event, SmsInbound
from gravity_events.settings import KafkaSettings

__all__ = ["ASYNCAPI_FILE", "ASYNCAPI_VERSION", "build_asyncapi", "render_asyncapi"]

ASYNCAPI_VERSION = "3.0.0"
ASYNCAPI_FILE = "asyncapi.yaml"
KAFKA_BINDING_VERSION = "0.5.0"
WS_BINDING_VERSION = "0.1.0"

_SCHEMA_REF = "#/components/schemas/{model}"
_TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"

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

_PUBLIC = {"name": "public", "description": "Part of the external contract: stable, for consumers."}
_INTERNAL = {
    "name": "internal",
    "description": "Between Gravity's own services; may change with them. Listed for operators.",
}


@dataclass(frozen=True)
class _Topic:
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


def _id_key(field: str, meaning: str, pattern: str | None = None) -> dict[str, Any]:
    key: dict[str, Any] = {"type": "string", "description": f"The record's `{field}`: {meaning}"}
    if pattern is not None:
        key["pattern"] = pattern
    return key


_SMS_INBOUND_DESCRIPTION = """\
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

_TOPICS: dict[str, _Topic] = {
    topics.RC_RAW: _Topic(
        channel_id="rcRaw",
        title="Raw RingCentral notifications",
        key=_id_key("rcMessageId", "RingCentral's message id (`body.id` of the notification)."),
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
    topics.SMS_INBOUND: _Topic(
        channel_id="smsInbound",
        title="Inbound SMS events",
        key=_id_key(
            "tenantId",
            "all of a tenant's messages share one partition, in the gateway's order.",
            TENANT_ID_RE.pattern,
        ),
        key_field="tenantId",
        description=_SMS_INBOUND_DESCRIPTION,
        sends=(
            "The registry publishes each message after storing it (acks=all), each tenant in "
            "(receivedAt, messageId) order. Fanout (webhooks) and realtime (WebSocket) read it too."
        ),
        public=True,
    ),
    topics.SUBSCRIPTIONS: _Topic(
        channel_id="registrySubscriptions",
        title="RingCentral subscriptions (compacted)",
        key=_id_key("subscriptionId", "RingCentral's subscription id."),
        key_field="subscriptionId",
        description=(
            "Compacted change stream: the RingCentral subscriptions whose notifications ingest accepts, "
            "each with its tenant and the SHA-256 of its verification token (the token never travels). "
            "The latest record of a key is the subscription's current state; ingest replays the topic "
            "from offset 0. Key = subscriptionId."
        ),
        sends="The registry publishes connections made, replaced and deleted (through its outbox).",
    ),
    topics.API_KEYS: _Topic(
        channel_id="registryApiKeys",
        title="API keys (compacted)",
        key=_id_key("keyId", "the public handle of the key, never its secret.", KEY_ID_RE.pattern),
        key_field="keyId",
        description=(
            "Compacted change stream: API key hashes and their revocations. Realtime replays it from "
            "offset 0 to authenticate sockets and closes the sockets a revoked key opened. Key = keyId."
        ),
        sends="The registry publishes keys created and deleted (through its outbox).",
    ),
    topics.APPS: _Topic(
        channel_id="registryApps",
        title="Apps (compacted)",
        key=_id_key("appId", "the app.", APP_ID_RE.pattern),
        key_field="appId",
        description=(
            "Compacted change stream: each app's delivery configuration (webhook URL, disabled flag, "
            "encrypted signing secrets). Fanout replays it from offset 0. Key = appId."
        ),
        sends="The registry publishes apps created, changed, disabled and deleted (through its outbox).",
    ),
    topics.DELIVERIES: _Topic(
        channel_id="deliveries",
        title="Webhook delivery attempts",
        key=_id_key("appId", "the app delivered to.", APP_ID_RE.pattern),
        key_field="appId",
        description=(
            "Every webhook delivery attempt, successful or not, and the disabling of an endpoint that "
            "failed continuously. The registry reads it for `GET /v1/apps/{appId}/deliveries` and to "
            "mark apps disabled. Key = appId."
        ),
        sends="Fanout publishes one record per attempt, and one when it disables an endpoint.",
    ),
    topics.DELIVERY_REQUESTS: _Topic(
        channel_id="fanoutRequests",
        title="On-demand delivery requests",
        key=_id_key("appId", "the app to deliver to.", APP_ID_RE.pattern),
        key_field="appId",
        description=(
            "Deliveries asked for through `POST /v1/apps/{appId}/deliveries/{messageId}/retry`, carried "
            "out by fanout. Key = appId."
        ),
        sends="The registry publishes each request (through its outbox).",
    ),
    topics.FANOUT_RETRY: _Topic(
        channel_id="fanoutRetry",
        title="Fanout retry queue",
        key=_id_key("appId", "the app to deliver to.", APP_ID_RE.pattern),
        key_field="appId",
        description=(
            "Fanout's durable retry queue: failed deliveries with the time of their next attempt. The "
            "producer picks the partition, one per step of the retry schedule (not by key), so every "
            "record of a partition waits about as long as the others and a partition's head is the next "
            f"one due. Each record names the consumer group that scheduled it (`{RETRY_GROUP_HEADER}`); "
            "another deployment on the same cluster skips it. Key = appId."
        ),
        sends="Fanout publishes a failed delivery's next attempt, to the partition of its retry step.",
    ),
    topics.DEAD_LETTER: _Topic(
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

_DEAD_LETTER_MESSAGE = "DeadLetterRecord"
_CONNECTED_FRAME = "ConnectedFrame"
_SMS_FRAME = "SmsInboundFrame"
_WS_CHANNEL = "realtimeWebSocket"

_EXAMPLE = SmsInbound(
    message_id="msg_a1b2c3d4e5f6",
    from_="+15559876543",
    to="+15551234567",
    body="Yes, I confirm",
    rc_message_id="123456789",
    tenant_id="tenant_abc123def456abcd",
    timestamp=datetime(2026, 3, 1, 14, 30, tzinfo=UTC),
)
_EXAMPLE_RECEIVED_AT = datetime(2026, 3, 1, 14, 30, 0, 120_000, tzinfo=UTC)

_WS_DESCRIPTION = """\
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
frame too large; 1012 the server is restarting; 4401 invalid, missing or revoked API key (a key \
deleted through the API closes its sockets within 5 seconds); 4404 unknown `since`; 4429 too many open \
sockets for this key.
"""

_INFO_DESCRIPTION = f"""\
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


def _ref(*path: str) -> dict[str, str]:
    return {"$ref": "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in path)}


def _type_of(model: type[Event]) -> str:
    value = model.model_fields["type"].default
    if not isinstance(value, str):
        raise TypeError(f"{model.__name__} has no `type` literal")
    return value


def _summary(model: type[Event]) -> str:
    return (model.__doc__ or model.__name__).strip().splitlines()[0]


def _topic_configuration(configs: dict[str, str]) -> dict[str, Any]:
    """TopicSpec configs (broker strings) as the Kafka channel binding types them."""
    out: dict[str, Any] = {}
    for name, value in sorted(configs.items()):
        if name == "cleanup.policy":
            out[name] = [p.strip() for p in value.split(",")]
        elif name.endswith((".ms", ".bytes")):
            out[name] = int(value)
        elif name.startswith("confluent.") and name.endswith(".validation"):
            out[name] = value.lower() == "true"
        else:
            out[name] = value
    return out


def _record_headers(model: type[Event], topic: str) -> dict[str, Any]:
    properties: dict[str, Any] = {
        TYPE_HEADER: {
            "type": "string",
            "const": _type_of(model),
            "description": "The event's `type`: which message of the channel this is, without parsing it.",
        },
        VERSION_HEADER: {
            "type": "string",
            "const": str(SCHEMA_VERSION),
            "description": "Schema version of the value. Refuse a version newer than you know.",
        },
    }
    required = [TYPE_HEADER, VERSION_HEADER]
    if topic == topics.SMS_INBOUND:
        properties[RECEIVED_AT_HEADER] = {
            "type": "string",
            "pattern": _TIMESTAMP_PATTERN,
            "description": (
                "The message's receivedAt (when the gateway accepted it). With messageId it is the "
                "gateway's order, in which each tenant's records are published."
            ),
        }
        required.append(RECEIVED_AT_HEADER)
    if topic == topics.FANOUT_RETRY:
        properties[RETRY_GROUP_HEADER] = {
            "type": "string",
            "description": "Consumer group of the fanout deployment that scheduled the retry.",
        }
        required.append(RETRY_GROUP_HEADER)
    return {"type": "object", "properties": properties, "required": required}


def _kafka_message(model: type[Event], topic: str, spec: _Topic) -> dict[str, Any]:
    message: dict[str, Any] = {
        "name": _type_of(model),
        "title": model.__name__,
        "summary": _summary(model),
        "contentType": "application/json",
        "headers": _record_headers(model, topic),
        "payload": _ref("components", "schemas", model.__name__),
        "bindings": {"kafka": {"key": spec.key, "bindingVersion": KAFKA_BINDING_VERSION}},
    }
    if model is SmsInbound:
        headers = [
            *encode_headers(_EXAMPLE),
            (RECEIVED_AT_HEADER, format_timestamp(_EXAMPLE_RECEIVED_AT).encode()),
        ]
        message["examples"] = [
            {
                "name": "contract",
                "summary": f"The contract's example; its key is `{_EXAMPLE.tenant_id}`.",
                "headers": {k: v.decode() for k, v in headers},
                "payload": _EXAMPLE.model_dump(mode="json", by_alias=True),
            }
        ]
    return message


def _dead_letter_message() -> dict[str, Any]:
    return {
        "name": "dead_letter",
        "title": _DEAD_LETTER_MESSAGE,
        "summary": "A record set aside, as it was, with where it came from.",
        "contentType": "application/octet-stream",
        "headers": {
            "type": "object",
            "description": "The original record's headers (usually the event headers), then these.",
            "properties": {
                name: {"type": "string", "description": text}
                | ({"pattern": "^[0-9]+$"} if name.endswith(("partition", "offset")) else {})
                for name, text in DEAD_LETTER_HEADERS.items()
            },
            "required": list(DEAD_LETTER_HEADERS),
        },
        "payload": {
            "description": (
                "The original record value, byte for byte: usually an event of the origin topic, possibly "
                "not JSON at all (which can be why it is here)."
            )
        },
        "bindings": {
            "kafka": {"key": _TOPICS[topics.DEAD_LETTER].key, "bindingVersion": KAFKA_BINDING_VERSION}
        },
    }


def _ws_messages() -> dict[str, Any]:
    return {
        _CONNECTED_FRAME: {
            "name": "connected",
            "title": _CONNECTED_FRAME,
            "summary": "The first frame of every connection: which tenant the key belongs to.",
            "contentType": "application/json",
            "payload": _ref("components", "schemas", _CONNECTED_FRAME),
            "examples": [
                {"name": "connected", "payload": {"type": "connected", "tenantId": _EXAMPLE.tenant_id}}
            ],
        },
        _SMS_FRAME: {
            "name": _type_of(SmsInbound),
            "title": _SMS_FRAME,
            "summary": "One inbound SMS of the tenant: the JSON of the Kafka record and the webhook body.",
            "contentType": "application/json",
            "payload": _ref("components", "schemas", SmsInbound.__name__),
            "examples": [{"name": "contract", "payload": _EXAMPLE.model_dump(mode="json", by_alias=True)}],
        },
    }


def _connected_frame_schema() -> dict[str, Any]:
    return {
        "title": _CONNECTED_FRAME,
        "description": "Sent once, right after the upgrade, before any history or live frame.",
        "type": "object",
        "properties": {
            "type": {"const": "connected", "type": "string"},
            "tenantId": {"type": "string", "pattern": TENANT_ID_RE.pattern},
        },
        "required": ["type", "tenantId"],
    }


def _model_schemas() -> dict[str, Any]:
    """Every event model's serialization schema, cross-references pointing into components."""
    models = sorted({m for ms in TOPIC_EVENTS.values() for m in ms}, key=lambda m: m.__name__)
    _, top = models_json_schema(
        [(m, "serialization") for m in models], by_alias=True, ref_template=_SCHEMA_REF
    )
    defs: dict[str, Any] = top.get("$defs", {})
    return {name: defs[name] for name in sorted(defs)}


def _servers() -> dict[str, Any]:
    bootstrap = KafkaSettings.model_fields["kafka_bootstrap_servers"].default
    return {
        "kafka": {
            "host": bootstrap,
            "protocol": "kafka",
            "title": "Kafka cluster",
            "description": (
                f"The deployment's brokers (`KAFKA_BOOTSTRAP_SERVERS`, default `{bootstrap}`). "
                "Authentication and TLS are the cluster's."
            ),
        },
        "realtime": {
            "host": "127.0.0.1:8002",
            "protocol": "ws",
            "title": "Realtime",
            "description": (
                "The realtime service (default `127.0.0.1:8002`; behind the HTTP front in docker-compose, "
                "which routes `/v1/ws` to it). Use `wss` wherever the front terminates TLS."
            ),
            "security": [_ref("components", "securitySchemes", n) for n in ("apiKeyBearer", "apiKeyQuery")],
        },
    }


def _ws_channel() -> dict[str, Any]:
    query = {
        "type": "object",
        "properties": {
            "token": {"type": "string", "description": "The API key, for clients that cannot set headers."},
            "since": {
                "type": "string",
                "pattern": MESSAGE_ID_RE.pattern,
                "description": "Resume after this messageId of the tenant (oldest first, then live).",
            },
        },
    }
    headers = {
        "type": "object",
        "properties": {
            "Authorization": {"type": "string", "pattern": "^Bearer .+$", "description": "`Bearer <apiKey>`."}
        },
    }
    return {
        "address": "/v1/ws",
        "title": "Realtime WebSocket",
        "summary": "One tenant's live sms_inbound stream, resumable with `since`.",
        "description": _WS_DESCRIPTION,
        "servers": [_ref("servers", "realtime")],
        "messages": {name: _ref("components", "messages", name) for name in (_CONNECTED_FRAME, _SMS_FRAME)},
        "tags": [{"name": _PUBLIC["name"]}],
        "bindings": {
            "ws": {"method": "GET", "query": query, "headers": headers, "bindingVersion": WS_BINDING_VERSION}
        },
    }


def build_asyncapi() -> dict[str, Any]:
    """The document as plain data, in the order it is written."""
    schemas = _model_schemas()
    schemas[_CONNECTED_FRAME] = _connected_frame_schema()
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for topic_spec in topics.ALL_TOPICS:
        spec = _TOPICS.get(topic_spec.name)
        if spec is None:
            raise LookupError(f"topic {topic_spec.name} is not described in gravity_events.asyncapi._TOPICS")
        if topic_spec.name == topics.DEAD_LETTER:
            channel_messages = {_DEAD_LETTER_MESSAGE: _dead_letter_message()}
        else:
            models = TOPIC_EVENTS.get(topic_spec.name, ())
            if not models:
                raise LookupError(
                    f"topic {topic_spec.name} has no events in gravity_events.codec.TOPIC_EVENTS"
                )
            for m in models:
                if spec.key_field is not None and spec.key_field not in schemas[m.__name__]["properties"]:
                    raise ValueError(f"{m.__name__} has no {spec.key_field}, the key of {topic_spec.name}")
            channel_messages = {m.__name__: _kafka_message(m, topic_spec.name, spec) for m in models}
        for name, message in channel_messages.items():
            if name in messages:
                raise ValueError(f"message {name} is on more than one topic; give each topic its own")
            messages[name] = message
        binding: dict[str, Any] = {"partitions": topic_spec.partitions}
        if topic_spec.configs:
            binding["topicConfiguration"] = _topic_configuration(topic_spec.configs)
        binding["bindingVersion"] = KAFKA_BINDING_VERSION
        tag = {"name": (_PUBLIC if spec.public else _INTERNAL)["name"]}
        channels[spec.channel_id] = {
            "address": topic_spec.name,
            "title": spec.title,
            "description": spec.description,
            "servers": [_ref("servers", "kafka")],
            "messages": {name: _ref("components", "messages", name) for name in channel_messages},
            "tags": [tag],
            "bindings": {"kafka": binding},
        }
        operations["send" + spec.channel_id[0].upper() + spec.channel_id[1:]] = {
            "action": "send",
            "channel": _ref("channels", spec.channel_id),
            "title": f"Publish: {spec.title}",
            "description": spec.sends,
            "messages": [_ref("channels", spec.channel_id, "messages", name) for name in channel_messages],
            "tags": [tag],
        }

    channels[_WS_CHANNEL] = _ws_channel()
    messages.update(_ws_messages())
    operations["sendRealtimeFrames"] = {
        "action": "send",
        "channel": _ref("channels", _WS_CHANNEL),
        "title": "Stream frames to a WebSocket client",
        "description": "Realtime sends one `connected` frame, then the tenant's `sms_inbound` frames.",
        "messages": [_ref("channels", _WS_CHANNEL, "messages", n) for n in (_CONNECTED_FRAME, _SMS_FRAME)],
        "tags": [{"name": _PUBLIC["name"]}],
    }
    inbound = _TOPICS[topics.SMS_INBOUND].channel_id
    operations["consumeSmsInbound"] = {
        "action": "receive",
        "channel": _ref("channels", inbound),
        "title": "Consume inbound SMS (downstream analytics)",
        "description": (
            "A downstream consumer reads the topic with a consumer group of its own (Gravity's services "
            "use group ids starting with `gravity-`; never join one). Per-tenant order holds within a "
            "partition; processing must be idempotent by `messageId`, since delivery is at-least-once. "
            f"Skip or stop at a `{VERSION_HEADER}` newer than the consumer knows."
        ),
        "messages": [_ref("channels", inbound, "messages", SmsInbound.__name__)],
        "tags": [{"name": _PUBLIC["name"]}],
        "bindings": {
            "kafka": {
                "groupId": {"type": "string", "description": "The consumer's own group id."},
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Gravity SMS events",
            "version": str(SCHEMA_VERSION),
            "description": _INFO_DESCRIPTION,
            "tags": [_PUBLIC, _INTERNAL],
        },
        "defaultContentType": "application/json",
        "servers": _servers(),
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": {name: schemas[name] for name in sorted(schemas)},
            "messages": messages,
            "securitySchemes": {
                "apiKeyBearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`Authorization: Bearer <apiKey>` on the upgrade request.",
                },
                "apiKeyQuery": {
                    "type": "httpApiKey",
                    "name": "token",
                    "in": "query",
                    "description": "`?token=<apiKey>`, for browsers: they cannot set WebSocket headers.",
                },
            },
        },
    }


def render_asyncapi() -> str:
    """The document as YAML text: keys in document order, multi-line text folded, no aliases."""
    import yaml  # type: ignore[import-untyped]  # only the generator and tests need pyyaml

    def text(dumper: Any, data: str) -> Any:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=">" if "\n" in data else None)

    # Shared sub-objects (tags, key schemas) are written out each time: anchors would only obscure them.
    dumper: Any = type("_Dumper", (yaml.SafeDumper,), {"ignore_aliases": lambda self, data: True})
    dumper.add_representer(str, text)
    body = yaml.dump(build_asyncapi(), Dumper=dumper, sort_keys=False, allow_unicode=True, width=100)
    return "# Generated by `python -m gravity_events.schemas` from gravity_events; do not edit.\n" + str(body)
