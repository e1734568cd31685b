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

from typing import Any

from pydantic.json_schema import models_json_schema

from gravity_events import topics
from gravity_events.asyncapi_text import (
    CONNECTED_FRAME,
    DEAD_LETTER_HEADERS,
    DEAD_LETTER_MESSAGE,
    EXAMPLE,
    EXAMPLE_RECEIVED_AT,
    INFO_DESCRIPTION,
    INTERNAL,
    PUBLIC,
    RETRY_GROUP_HEADER,
    SMS_FRAME,
    TOPICS,
    WS_CHANNEL,
    WS_DESCRIPTION,
    Topic,
)
from gravity_events.codec import (
    RECEIVED_AT_HEADER,
    SCHEMA_VERSION,
    TOPIC_EVENTS,
    TYPE_HEADER,
    VERSION_HEADER,
    encode_headers,
)
from gravity_events.ids import MESSAGE_ID_RE, TENANT_ID_RE, format_timestamp
from gravity_events.models import Event, SmsInbound
from gravity_events.settings import KafkaSettings

__all__ = ["ASYNCAPI_FILE", "ASYNCAPI_VERSION", "build_asyncapi", "render_asyncapi"]

ASYNCAPI_VERSION = "3.0.0"
ASYNCAPI_FILE = "asyncapi.yaml"
KAFKA_BINDING_VERSION = "0.5.0"
WS_BINDING_VERSION = "0.1.0"

_SCHEMA_REF = "#/components/schemas/{model}"
_TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"


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


def _kafka_message(model: type[Event], topic: str, spec: Topic) -> dict[str, Any]:
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
            *encode_headers(EXAMPLE),
            (RECEIVED_AT_HEADER, format_timestamp(EXAMPLE_RECEIVED_AT).encode()),
        ]
        message["examples"] = [
            {
                "name": "contract",
                "summary": f"The contract's example; its key is `{EXAMPLE.tenant_id}`.",
                "headers": {k: v.decode() for k, v in headers},
                "payload": EXAMPLE.model_dump(mode="json", by_alias=True),
            }
        ]
    return message


def _dead_letter_message() -> dict[str, Any]:
    return {
        "name": "dead_letter",
        "title": DEAD_LETTER_MESSAGE,
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
            "kafka": {"key": TOPICS[topics.DEAD_LETTER].key, "bindingVersion": KAFKA_BINDING_VERSION}
        },
    }


def _ws_messages() -> dict[str, Any]:
    return {
        CONNECTED_FRAME: {
            "name": "connected",
            "title": CONNECTED_FRAME,
            "summary": "The first frame of every connection: which tenant the key belongs to.",
            "contentType": "application/json",
            "payload": _ref("components", "schemas", CONNECTED_FRAME),
            "examples": [
                {"name": "connected", "payload": {"type": "connected", "tenantId": EXAMPLE.tenant_id}}
            ],
        },
        SMS_FRAME: {
            "name": _type_of(SmsInbound),
            "title": SMS_FRAME,
            "summary": "One inbound SMS of the tenant: the JSON of the Kafka record and the webhook body.",
            "contentType": "application/json",
            "payload": _ref("components", "schemas", SmsInbound.__name__),
            "examples": [{"name": "contract", "payload": EXAMPLE.model_dump(mode="json", by_alias=True)}],
        },
    }


def _connected_frame_schema() -> dict[str, Any]:
    return {
        "title": CONNECTED_FRAME,
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
        "description": WS_DESCRIPTION,
        "servers": [_ref("servers", "realtime")],
        "messages": {name: _ref("components", "messages", name) for name in (CONNECTED_FRAME, SMS_FRAME)},
        "tags": [{"name": PUBLIC["name"]}],
        "bindings": {
            "ws": {"method": "GET", "query": query, "headers": headers, "bindingVersion": WS_BINDING_VERSION}
        },
    }


def build_asyncapi() -> dict[str, Any]:
    """The document as plain data, in the order it is written."""
    schemas = _model_schemas()
    schemas[CONNECTED_FRAME] = _connected_frame_schema()
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for topic_spec in topics.ALL_TOPICS:
        spec = TOPICS.get(topic_spec.name)
        if spec is None:
            raise LookupError(f"topic {topic_spec.name} is not described in gravity_events.asyncapi.TOPICS")
        if topic_spec.name == topics.DEAD_LETTER:
            channel_messages = {DEAD_LETTER_MESSAGE: _dead_letter_message()}
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
        tag = {"name": (PUBLIC if spec.public else INTERNAL)["name"]}
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

    channels[WS_CHANNEL] = _ws_channel()
    messages.update(_ws_messages())
    operations["sendRealtimeFrames"] = {
        "action": "send",
        "channel": _ref("channels", WS_CHANNEL),
        "title": "Stream frames to a WebSocket client",
        "description": "Realtime sends one `connected` frame, then the tenant's `sms_inbound` frames.",
        "messages": [_ref("channels", WS_CHANNEL, "messages", n) for n in (CONNECTED_FRAME, SMS_FRAME)],
        "tags": [{"name": PUBLIC["name"]}],
    }
    inbound = TOPICS[topics.SMS_INBOUND].channel_id
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
        "tags": [{"name": PUBLIC["name"]}],
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
            "description": INFO_DESCRIPTION,
            "tags": [PUBLIC, INTERNAL],
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
