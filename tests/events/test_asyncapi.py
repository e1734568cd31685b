"""The committed AsyncAPI document: in step with the models, and a structurally valid AsyncAPI 3.0 document.

What is checked here without the official AsyncAPI JSON Schema: the version, that every ``$ref``
resolves inside the document, that operations name existing channels and only their own channels'
messages, that every schema in the document is a valid JSON Schema (Draft 2020-12 and Draft 7 meta-schemas:
AsyncAPI's default schema format is a Draft 7 superset), and that the schemas accept what the codec
actually writes. With ``GRAVITY_ASYNCAPI_SCHEMA`` set to a copy of the official ``3.0.0.json``
(github.com/asyncapi/spec-json-schemas, ``schemas/``), the document is validated against it as well.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml
from aiokafka import ConsumerRecord

from gravity_events import kafka, topics
from gravity_events.asyncapi import ASYNCAPI_FILE, DEAD_LETTER_HEADERS, build_asyncapi, render_asyncapi
from gravity_events.codec import RECEIVED_AT_HEADER, TOPIC_EVENTS, encode, encode_headers
from gravity_events.ids import TENANT_ID_RE, format_timestamp
from gravity_events.models import (
    ApiKeyActive,
    ApiKeyRevoked,
    AppDeleted,
    AppEndpointDisabled,
    AppUpserted,
    DeliveryAttempt,
    DeliveryGuardCleared,
    DeliveryRequested,
    DeliveryRetry,
    EncryptedSecret,
    Event,
    RcNotification,
    RetriesFinished,
    SmsInbound,
    SubscriptionActive,
    SubscriptionRemoved,
)
from gravity_events.schemas import main as schemas_main
from gravity_events.schemas import render_schemas

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
DRAFT_7 = "http://json-schema.org/draft-07/schema#"
DOC_URI = "urn:gravity:asyncapi"

NOW = datetime(2026, 3, 1, 14, 30, tzinfo=UTC)
TENANT = "tenant_abc123def456abcd"
APP = "app_abc123def456abcd"
SMS = SmsInbound(
    message_id="msg_a1b2c3d4e5f6",
    from_="+15559876543",
    to="+15551234567",
    body="Yes, I confirm",
    rc_message_id="123456789",
    tenant_id=TENANT,
    timestamp=NOW,
)
SAMPLES: dict[type[Event], Event] = {
    RcNotification: RcNotification(
        tenant_id=TENANT, subscription_id="sub-1", rc_message_id="123456789", received_at=NOW, notification={}
    ),
    SmsInbound: SMS,
    SubscriptionActive: SubscriptionActive(
        subscription_id="sub-1", tenant_id=TENANT, verification_token_sha256="ab"
    ),
    SubscriptionRemoved: SubscriptionRemoved(subscription_id="sub-1", tenant_id=TENANT),
    ApiKeyActive: ApiKeyActive(key_id="key_abc123def456abcd", tenant_id=TENANT, key_sha256="cd"),
    ApiKeyRevoked: ApiKeyRevoked(key_id="key_abc123def456abcd", tenant_id=TENANT),
    AppUpserted: AppUpserted(
        app_id=APP,
        tenant_id=TENANT,
        webhook_url=None,
        disabled=False,
        signing_secrets=(EncryptedSecret(ciphertext="x", expires_at=NOW),),
        updated_at=NOW,
    ),
    AppDeleted: AppDeleted(app_id=APP, tenant_id=TENANT),
    DeliveryAttempt: DeliveryAttempt(
        app_id=APP,
        tenant_id=TENANT,
        message_id=SMS.message_id,
        attempt=1,
        succeeded=False,
        response_code=None,
        duration_ms=12.5,
        error="timeout",
        attempted_at=NOW,
        next_attempt_at=NOW,
    ),
    AppEndpointDisabled: AppEndpointDisabled(
        app_id=APP, tenant_id=TENANT, failing_since=NOW, disabled_at=NOW
    ),
    DeliveryRequested: DeliveryRequested(app_id=APP, tenant_id=TENANT, event=SMS, requested_at=NOW),
    DeliveryRetry: DeliveryRetry(
        app_id=APP, tenant_id=TENANT, attempt=2, due_at=NOW, first_attempted_at=NOW, event=SMS
    ),
    DeliveryGuardCleared: DeliveryGuardCleared(app_id=APP, tenant_id=TENANT, guard_id="grd_0123456789abcdef"),
    RetriesFinished: RetriesFinished(partition=0, offsets=((3, 7), (9, 9))),
}
"""One event of every model, as its producer would write it."""


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return build_asyncapi()


@pytest.fixture(scope="module")
def registry(doc: dict[str, Any]) -> jsonschema_rs.Registry:
    """The document as one JSON Schema resource, so ``#/components/...`` references resolve."""
    return jsonschema_rs.Registry([(DOC_URI, doc)])


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref!r} is not a reference into this document"
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref!r} does not resolve (at {part!r})"
        node = node[part]
    return node


def _refs(node: Any, path: str = "#") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield path, value
            else:
                yield from _refs(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _refs(value, f"{path}/{i}")


def _deref(doc: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and set(node) == {"$ref"}:
        node = _resolve(doc, node["$ref"])
    return node


def _validator(registry: jsonschema_rs.Registry, pointer: str) -> Any:
    return jsonschema_rs.Draft202012Validator({"$ref": DOC_URI + pointer}, registry=registry)


def _schemas(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every JSON Schema in the document, with where it is."""
    for name, schema in doc["components"]["schemas"].items():
        yield f"components/schemas/{name}", schema
    for name, message in doc["components"]["messages"].items():
        for field in ("payload", "headers"):
            if field in message:
                yield f"components/messages/{name}/{field}", message[field]
        if "kafka" in message.get("bindings", {}):
            yield f"components/messages/{name}/bindings/kafka/key", message["bindings"]["kafka"]["key"]
    for cid, channel in doc["channels"].items():
        for field in ("query", "headers"):
            if field in channel.get("bindings", {}).get("ws", {}):
                yield f"channels/{cid}/bindings/ws/{field}", channel["bindings"]["ws"][field]
    for oid, operation in doc["operations"].items():
        kafka_binding = operation.get("bindings", {}).get("kafka", {})
        for field in ("groupId", "clientId"):
            if field in kafka_binding:
                yield f"operations/{oid}/bindings/kafka/{field}", kafka_binding[field]


# -- drift -------------------------------------------------------------------------------------------


def test_committed_asyncapi_matches_the_models(repo_root: Path) -> None:
    committed = (repo_root / "libs" / "events" / "schemas" / ASYNCAPI_FILE).read_text()
    assert committed == render_asyncapi(), "run `make schemas` and commit libs/events/schemas/"


def test_schemas_check_passes_on_the_committed_files(repo_root: Path) -> None:
    assert schemas_main(["--check", str(repo_root / "libs" / "events" / "schemas")]) == 0


def test_yaml_is_the_document_and_deterministic(doc: dict[str, Any]) -> None:
    text = render_asyncapi()
    assert text == render_asyncapi()
    assert yaml.safe_load(text) == doc
    assert "&id" not in text and "*id" not in text  # no anchors: every object written where it is


def test_payload_schemas_are_the_committed_json_schemas(doc: dict[str, Any]) -> None:
    """Each message payload is the very schema its topic's JSON Schema holds for that model."""
    components = doc["components"]["schemas"]
    for topic, models in TOPIC_EVENTS.items():
        text = render_schemas()[f"{topic}.schema.json"]
        topic_schema = json.loads(text.replace("#/$defs/", "#/components/schemas/"))
        defs = topic_schema.pop("$defs", {})
        for model in models:
            if len(models) == 1:
                own = {
                    k: v for k, v in topic_schema.items() if k not in {"$id", "x-schema-version", "x-topic"}
                }
            else:
                own = defs[model.__name__]
            assert components[model.__name__] == own, model.__name__
            for name, nested in defs.items():
                assert components[name] == nested, name


# -- structure ---------------------------------------------------------------------------------------


def test_is_asyncapi_3_with_its_required_parts(doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] and doc["info"]["version"]
    assert isinstance(doc["info"]["version"], str)
    for section in ("servers", "channels", "operations", "components"):
        assert isinstance(doc[section], dict) and doc[section], section
    for section in (doc["servers"], doc["channels"], doc["operations"], *doc["components"].values()):
        for key in section:
            assert all(c.isalnum() or c in "._-" for c in key), f"component key {key!r}"
    for name, server in doc["servers"].items():
        assert server["host"] and server["protocol"] in {"kafka", "ws", "wss"}, name


def test_every_reference_resolves(doc: dict[str, Any]) -> None:
    refs = list(_refs(doc))
    assert refs
    for where, ref in refs:
        assert _resolve(doc, ref) is not None, where


def test_operations_name_existing_channels_and_their_messages(doc: dict[str, Any]) -> None:
    channels = doc["channels"]
    sent: set[str] = set()
    for oid, operation in doc["operations"].items():
        assert operation["action"] in {"send", "receive"}, oid
        ref = operation["channel"]["$ref"]
        assert ref.startswith("#/channels/"), oid
        cid = ref.removeprefix("#/channels/")
        assert cid in channels, oid
        assert operation["messages"], oid
        for message in operation["messages"]:
            prefix = f"#/channels/{cid}/messages/"
            assert message["$ref"].startswith(prefix), f"{oid}: {message['$ref']} is not a message of {cid}"
            assert message["$ref"].removeprefix(prefix) in channels[cid]["messages"], oid
        if operation["action"] == "send":
            sent.add(cid)
    assert sent == set(channels), "every channel is one Gravity sends on"
    for cid, channel in channels.items():
        for server in channel["servers"]:
            assert server["$ref"].removeprefix("#/servers/") in doc["servers"], cid
        for name, message in channel["messages"].items():
            assert "payload" in _deref(doc, message), f"{cid}/{name}"


def test_every_topic_is_a_channel_with_its_spec(doc: dict[str, Any]) -> None:
    by_address = {c["address"]: c for c in doc["channels"].values()}
    assert set(by_address) == {spec.name for spec in topics.ALL_TOPICS} | {"/v1/ws"}
    for spec in topics.ALL_TOPICS:
        channel = by_address[spec.name]
        binding = channel["bindings"]["kafka"]
        assert binding["partitions"] == spec.partitions, spec.name
        assert binding["bindingVersion"] == "0.5.0"
        configuration = binding.get("topicConfiguration", {})
        assert set(configuration) == set(spec.configs), spec.name
        if "cleanup.policy" in spec.configs:
            assert configuration["cleanup.policy"] == spec.configs["cleanup.policy"].split(","), spec.name
        assert channel["servers"] == [{"$ref": "#/servers/kafka"}], spec.name
        names = {_deref(doc, m)["title"] for m in channel["messages"].values()}
        expected = {m.__name__ for m in TOPIC_EVENTS.get(spec.name, ())} or {"DeadLetterRecord"}
        assert names == expected, spec.name


def test_every_schema_is_a_valid_json_schema(doc: dict[str, Any]) -> None:
    checked = 0
    for where, schema in _schemas(doc):
        assert isinstance(schema, dict), where
        for draft in (DRAFT_2020_12, DRAFT_7):
            try:
                jsonschema_rs.meta.validate({**schema, "$schema": draft})
            except jsonschema_rs.ValidationError as exc:
                pytest.fail(f"{where} is not a valid {draft} schema: {exc}")
        checked += 1
    assert checked >= len(doc["components"]["schemas"]) + len(doc["components"]["messages"])


# -- the schemas accept what the code writes ---------------------------------------------------------


def test_samples_cover_every_model() -> None:
    assert set(SAMPLES) == {m for models in TOPIC_EVENTS.values() for m in models}


@pytest.mark.parametrize("model", sorted(SAMPLES, key=lambda m: m.__name__), ids=lambda m: m.__name__)
def test_records_match_their_message(
    doc: dict[str, Any], registry: jsonschema_rs.Registry, model: type[Event]
) -> None:
    event = SAMPLES[model]
    (topic,) = [t for t, models in TOPIC_EVENTS.items() if model in models]
    pointer = f"#/components/messages/{model.__name__}"
    message = _resolve(doc, pointer)
    payload = json.loads(encode(event))
    _validator(registry, pointer + "/payload").validate(payload)
    headers = {k: v.decode() for k, v in encode_headers(event)}
    if topic == topics.SMS_INBOUND:
        headers[RECEIVED_AT_HEADER] = format_timestamp(NOW)
    if topic == topics.FANOUT_RETRY:
        headers["gravity-fanout-group"] = "gravity-fanout"
    _validator(registry, pointer + "/headers").validate(headers)
    other = next(m for m in SAMPLES if m is not model)
    wrong = {k: v.decode() for k, v in encode_headers(SAMPLES[other])}
    assert not _validator(registry, pointer + "/headers").is_valid({**headers, **wrong})
    key_schema = message["bindings"]["kafka"]["key"]
    field = key_schema["description"].split("`")[1]
    if model is RetriesFinished:  # keyed by the consumer group that wrote it, which the payload does not name
        return
    assert field in payload, f"the key of {topic} is the payload's {field}"
    _validator(registry, pointer + "/bindings/kafka/key").validate(payload[field])


def test_examples_match_their_schemas(doc: dict[str, Any], registry: jsonschema_rs.Registry) -> None:
    seen = 0
    for name, message in doc["components"]["messages"].items():
        for example in message.get("examples", []):
            pointer = f"#/components/messages/{name}"
            _validator(registry, pointer + "/payload").validate(example["payload"])
            if "headers" in example:
                _validator(registry, pointer + "/headers").validate(example["headers"])
            seen += 1
    assert seen >= 3


def test_connected_frame_schema_accepts_what_realtime_sends(registry: jsonschema_rs.Registry) -> None:
    frame = json.loads(f'{{"type":"connected","tenantId":"{TENANT}"}}')  # realtime writes this text
    validator = _validator(registry, "#/components/messages/ConnectedFrame/payload")
    validator.validate(frame)
    assert not validator.is_valid({"type": "sms_inbound", "tenantId": TENANT})
    assert not validator.is_valid({"type": "connected"})


async def test_dead_letter_headers_are_the_ones_the_helper_writes(doc: dict[str, Any]) -> None:
    sent: list[dict[str, Any]] = []

    class Producer:
        async def send_and_wait(self, topic: str, value: bytes | None, **kw: Any) -> None:
            sent.append({"topic": topic, "value": value, **kw})

    record = ConsumerRecord(
        topic=topics.SMS_INBOUND,
        partition=3,
        offset=41,
        timestamp=0,
        timestamp_type=0,
        key=TENANT.encode(),
        value=b"not json",
        checksum=None,
        serialized_key_size=len(TENANT),
        serialized_value_size=8,
        headers=[("gravity-type", b"sms_inbound")],
    )
    await kafka.dead_letter(Producer(), record, ValueError("bad"))  # type: ignore[arg-type]
    (out,) = sent
    assert out["topic"] == topics.DEAD_LETTER
    added = [k for k, _ in out["headers"][1:]]
    assert added == list(DEAD_LETTER_HEADERS)
    schema = _resolve(doc, "#/components/messages/DeadLetterRecord/headers")
    assert schema["required"] == added
    headers = {k: v.decode() for k, v in out["headers"]}
    jsonschema_rs.Draft202012Validator(schema).validate(headers)


# -- what consumers are told -------------------------------------------------------------------------


def test_sms_inbound_channel_tells_downstream_consumers_the_rules(doc: dict[str, Any]) -> None:
    channel = doc["channels"]["smsInbound"]
    assert channel["address"] == topics.SMS_INBOUND
    text = channel["description"]
    for phrase in ("Key = tenantId", "per-tenant", "At-least-once", "Dedupe by `messageId`"):
        assert phrase.lower() in text.lower(), phrase
    message = _deref(doc, channel["messages"]["SmsInbound"])
    assert message["bindings"]["kafka"]["key"]["pattern"] == TENANT_ID_RE.pattern
    assert RECEIVED_AT_HEADER in message["headers"]["required"]
    receives = [o for o in doc["operations"].values() if o["action"] == "receive"]
    assert [o["channel"]["$ref"] for o in receives] == ["#/channels/smsInbound"]


def test_websocket_channel_describes_the_handshake(doc: dict[str, Any]) -> None:
    channel = doc["channels"]["realtimeWebSocket"]
    assert channel["address"] == "/v1/ws"
    ws = channel["bindings"]["ws"]
    assert ws["method"] == "GET"
    assert set(ws["query"]["properties"]) == {"token", "since"}
    assert set(ws["headers"]["properties"]) == {"Authorization"}
    server = _deref(doc, channel["servers"][0])
    schemes = [_deref(doc, s) for s in server["security"]]
    assert {"type": "http", "scheme": "bearer"}.items() <= schemes[0].items()
    assert {"type": "httpApiKey", "name": "token", "in": "query"}.items() <= schemes[1].items()
    for code in ("4401", "4404", "4429", "1008", "1009", "1012"):
        assert code in channel["description"], code
    frames = {_deref(doc, m)["name"] for m in channel["messages"].values()}
    assert frames == {"connected", "sms_inbound"}


# -- the official AsyncAPI schema, where one is at hand ----------------------------------------------


def test_valid_against_the_official_asyncapi_schema(doc: dict[str, Any]) -> None:
    location = os.environ.get("GRAVITY_ASYNCAPI_SCHEMA")
    if not location:
        pytest.skip("set GRAVITY_ASYNCAPI_SCHEMA to the official AsyncAPI 3.0.0 JSON Schema to run this")
    validator = jsonschema_rs.validator_for(json.loads(Path(location).read_text()))
    errors = [f"{'/'.join(map(str, e.instance_path))}: {e.message}" for e in validator.iter_errors(doc)]
    assert not errors, "\n".join(errors[:20])
