"""bytes ⇄ event, one codec for every topic.

A record's value is the event's JSON (orjson, camelCase, field order as declared). Two headers make
every record self-describing: ``gravity-type`` (the ``type`` literal) and ``gravity-schema-version``.
A reader refuses a version newer than it knows, so an incompatible change is a new version, never a
silent misread.

Records made while a trace is current also carry its W3C ``traceparent`` (and ``tracestate``) headers,
written through the OpenTelemetry propagator (:mod:`gravity_events.tracing`), so a consumer continues the
trace that the webhook request started.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Union

import orjson
from opentelemetry.context import Context
from pydantic import Field, TypeAdapter, ValidationError

from gravity_events import topics, tracing
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
    Event,
    RcNotification,
    RetriesFinished,
    SmsInbound,
    SubscriptionActive,
    SubscriptionRemoved,
)

__all__ = [
    "RECEIVED_AT_HEADER",
    "SCHEMA_VERSION",
    "TOPIC_EVENTS",
    "CodecError",
    "decode",
    "encode",
    "encode_headers",
    "schema_adapters",
]

SCHEMA_VERSION = 1
TYPE_HEADER = "gravity-type"
VERSION_HEADER = "gravity-schema-version"
RECEIVED_AT_HEADER = "gravity-received-at"
"""On ``sms_inbound``: the message's receivedAt; the registry publishes each tenant in (receivedAt, messageId)
order, which realtime relies on to place live frames against a resume's ``since``."""

Headers = Sequence[tuple[str, bytes]]


class CodecError(ValueError):
    """A record that is not a valid event for its topic (bad JSON, wrong shape, unknown version)."""


def _union(*models: type[Event]) -> TypeAdapter[Any]:
    if len(models) == 1:
        return TypeAdapter(models[0])
    return TypeAdapter(Annotated[Union[models], Field(discriminator="type")])  # type: ignore[arg-type]  # noqa: UP007


TOPIC_EVENTS: dict[str, tuple[type[Event], ...]] = {
    topics.RC_RAW: (RcNotification,),
    topics.SMS_INBOUND: (SmsInbound,),
    topics.SUBSCRIPTIONS: (SubscriptionActive, SubscriptionRemoved),
    topics.API_KEYS: (ApiKeyActive, ApiKeyRevoked),
    topics.APPS: (AppUpserted, AppDeleted),
    topics.DELIVERIES: (DeliveryAttempt, AppEndpointDisabled),
    topics.DELIVERY_REQUESTS: (DeliveryRequested,),
    topics.FANOUT_RETRY: (DeliveryRetry, DeliveryGuardCleared, RetriesFinished),
}

_ADAPTERS: dict[str, TypeAdapter[Any]] = {t: _union(*m) for t, m in TOPIC_EVENTS.items()}


def schema_adapters() -> dict[str, TypeAdapter[Any]]:
    """The adapter of each topic, for JSON Schema generation."""
    return dict(_ADAPTERS)


def encode(event: Event) -> bytes:
    """The record value of ``event``."""
    return orjson.dumps(event.model_dump(mode="json", by_alias=True))


def encode_headers(event: Event, context: Context | None = None) -> list[tuple[str, bytes]]:
    """The headers that describe ``event``'s type and schema version, then the ``traceparent`` /
    ``tracestate`` of ``context`` (default: the current trace context) when a trace is current."""
    event_type = getattr(event, "type", type(event).__name__)
    return [
        (TYPE_HEADER, event_type.encode()),
        (VERSION_HEADER, str(SCHEMA_VERSION).encode()),
        *tracing.trace_headers(context),
    ]


def decode(topic: str, value: bytes | None, headers: Headers = ()) -> Event:
    """Decode a record of ``topic``; raise :class:`CodecError` for anything that is not valid."""
    adapter = _ADAPTERS.get(topic)
    if adapter is None:
        raise CodecError(f"no events are defined for topic {topic!r}")
    if value is None:
        raise CodecError("empty record (tombstone) where an event was expected")
    version = dict(headers).get(VERSION_HEADER)
    if version is not None:
        try:
            number = int(version)
        except ValueError as exc:
            raise CodecError(f"unreadable schema version header {version!r}") from exc
        if number > SCHEMA_VERSION:
            raise CodecError(f"schema version {number} is newer than {SCHEMA_VERSION}")
    try:
        event: Event = adapter.validate_json(value)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        raise CodecError(f"not a valid {topic} record: {errors}") from exc
    return event
