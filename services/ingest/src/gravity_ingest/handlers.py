"""What ingest does with a notification, testable without HTTP.

The checks run in the contract's order; the first that fails decides the answer. Subscriptions and
their verification-token hashes come from the registry's change stream, never from its database.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import Histogram

from gravity_events import topics, tracing
from gravity_events.codec import encode_headers
from gravity_events.ids import format_timestamp, message_id_for, utcnow
from gravity_events.kafka import Envelope
from gravity_events.logs import ids
from gravity_events.models import RcNotification, SubscriptionActive, SubscriptionRemoved
from gravity_events.ringcentral import (
    NotificationError,
    check_notification_shape,
    extract_inbound_sms,
    is_inbound_sms_event,
    is_renewal_reminder,
)
from gravity_ingest.errors import BrokerUnavailable, InvalidNotification, NotReady, Unauthorized

__all__ = ["MAX_NESTING", "Outcome", "SubscriptionTable", "accept_notification", "encode_raw_record"]

log = logging.getLogger(__name__)

MAX_NESTING = 64
"""Deepest JSON nesting accepted in a notification. A real one nests 3 levels; the consumers' JSON parser
(pydantic's) refuses about 200, so anything deeper could never be read back from the raw topic."""

_RECORD_HEADERS = encode_headers(
    RcNotification(tenant_id="", subscription_id="", rc_message_id="", received_at=utcnow(), notification={})
)
"""``gravity-type`` / ``gravity-schema-version`` of every raw record: the same for all, built once; a
record made under a trace adds its ``traceparent``/``tracestate`` (:func:`_record_headers`)."""

_APPEND_SPAN = f"{topics.RC_RAW} publish"
_APPEND_ATTRIBUTES = {"messaging.system": "kafka", "messaging.destination.name": topics.RC_RAW}


@dataclass(frozen=True, slots=True)
class _Subscription:
    tenant_id: str
    token_sha256: bytes


class SubscriptionTable:
    """subscriptionId → (tenant, token hash), kept current by the change stream.

    ``ready`` is set once the stream has been replayed (the reader's ``ready`` event); until then no
    presented token can be judged, so :meth:`verify` answers "not ready" rather than a wrong 401.
    """

    def __init__(self, ready: asyncio.Event | None = None) -> None:
        self._by_id: dict[str, _Subscription] = {}
        self.ready = ready if ready is not None else asyncio.Event()

    def __len__(self) -> int:
        return len(self._by_id)

    def apply(self, envelope: Envelope) -> None:
        """Apply one change record (last write wins, as on a compacted topic)."""
        event = envelope.event
        if isinstance(event, SubscriptionActive):
            digest = bytes.fromhex(event.verification_token_sha256)
            self._by_id[event.subscription_id] = _Subscription(event.tenant_id, digest)
        elif isinstance(event, SubscriptionRemoved):
            self._by_id.pop(event.subscription_id, None)

    def verify(self, subscription_id: str, token: str | None) -> str:
        """The tenant of ``subscription_id`` if ``token`` is its verification token; else raise.

        The presented token is hashed and compared with ``hmac.compare_digest``; an unknown
        subscription costs the same hash so the answer time does not tell which check failed.
        """
        if not self.ready.is_set():
            raise NotReady("subscriptions are still being loaded; retry shortly")
        known = self._by_id.get(subscription_id)
        presented = hashlib.sha256((token or "").encode()).digest()
        expected = known.token_sha256 if known is not None else b"\0" * 32
        if not hmac.compare_digest(presented, expected) or known is None or not token:
            raise Unauthorized("Verification-Token is missing or does not match the subscription")
        return known.tenant_id


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to an accepted notification."""

    appended: bool
    kind: str
    rc_message_id: str | None = None
    tenant_id: str | None = None


def _record_headers() -> list[tuple[str, bytes]]:
    """The raw record's headers: the constant pair, then the current trace context when there is one."""
    trace = tracing.trace_headers()
    return [*_RECORD_HEADERS, *trace] if trace else _RECORD_HEADERS


async def _append(
    producer: AIOKafkaProducer, key: bytes, value: bytes, *, timeout: float, seconds: Histogram | None
) -> None:
    """Append to the raw topic and wait for ``acks=all``, within ``timeout``; observe the time taken."""
    start = time.perf_counter()
    # asyncio.timeout rather than wait_for: no extra task per request on the hot path.
    async with asyncio.timeout(timeout):
        await producer.send_and_wait(topics.RC_RAW, value, key=key, headers=_record_headers())
    if seconds is not None:
        seconds.observe(time.perf_counter() - start)


def encode_raw_record(
    *,
    tenant_id: str,
    subscription_id: str,
    rc_message_id: str,
    received_at: datetime,
    raw_notification: bytes,
) -> bytes:
    """The ``gravity.rc.raw.v1`` value of an accepted notification, with RingCentral's bytes spliced in.

    It is the JSON that :func:`gravity_events.codec.encode` writes for the same
    :class:`~gravity_events.models.RcNotification` (same fields, same order, and byte-identical when the
    notification arrived compact; a test holds the two together), but the notification is not
    re-serialised: that was the largest cost of building the record, and the bytes stay exactly as sent
    (large integers keep every digit). ``raw_notification`` must be JSON that has already parsed.
    """
    return orjson.dumps(
        {
            "type": "rc_notification",
            "tenantId": tenant_id,
            "subscriptionId": subscription_id,
            "rcMessageId": rc_message_id,
            "receivedAt": format_timestamp(received_at),
            "source": "webhook",
            "notification": orjson.Fragment(raw_notification),
        }
    )


def _nesting_exceeds(value: Any, limit: int) -> bool:
    """True if ``value`` nests containers deeper than ``limit`` (stops as soon as it knows)."""
    if limit < 0:
        return True
    if isinstance(value, dict):
        return any(_nesting_exceeds(v, limit - 1) for v in value.values())
    if isinstance(value, list):
        return any(_nesting_exceeds(v, limit - 1) for v in value)
    return False


def _check_nesting(raw: bytes, data: dict[str, Any]) -> None:
    # Counting brackets is a C-speed upper bound on the depth, so ordinary notifications skip the walk.
    if raw.count(b"{") + raw.count(b"[") > MAX_NESTING and _nesting_exceeds(data, MAX_NESTING):
        raise InvalidNotification(f"the notification nests deeper than {MAX_NESTING} levels")


async def accept_notification(
    raw: bytes,
    verification_token: str | None,
    *,
    table: SubscriptionTable,
    producer: AIOKafkaProducer,
    publish_timeout: float,
    append_seconds: Histogram | None = None,
) -> Outcome:
    """Checks 3 to 6 of the contract (shape, verification, kind, append) for one request body.

    The raw record carries the current trace context (the request's, see
    :class:`gravity_service.metrics.HTTPMetricsMiddleware`); when spans are recorded the append is a
    producer span of its own. ``append_seconds`` observes each successful append's time. Each accepted
    notification is logged at info with its tenantId, messageId and rcMessageId.
    """
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidNotification(f"body is not valid JSON: {exc}") from exc
    try:
        subscription_id, event, body = check_notification_shape(data)
    except NotificationError as exc:
        raise InvalidNotification(f"not a RingCentral notification: {exc}") from exc
    tenant_id = table.verify(subscription_id, verification_token)
    if not is_inbound_sms_event(event, body):
        kind = "renewal_reminder" if is_renewal_reminder(event) else "ignored"
        # A renewal reminder is not forwarded: the registry's subscription keeper renews on its own
        # schedule, before expiry, so the reminder only confirms what is already planned.
        log.info(
            "verified %s notification for subscription %s: not stored",
            kind,
            subscription_id,
            extra=ids(tenant_id=tenant_id),
        )
        return Outcome(appended=False, kind=kind, tenant_id=tenant_id)
    try:
        sms = extract_inbound_sms(body)
    except NotificationError as exc:
        raise InvalidNotification(f"inbound SMS notification is unusable: {exc}") from exc
    _check_nesting(raw, data)
    value = encode_raw_record(
        tenant_id=tenant_id,
        subscription_id=subscription_id,
        rc_message_id=sms.rc_message_id,
        received_at=utcnow(),
        raw_notification=raw,
    )
    key = sms.rc_message_id.encode()
    message_id = message_id_for(tenant_id, sms.rc_message_id)
    try:
        if tracing.recording():
            attributes = {
                **_APPEND_ATTRIBUTES,
                "gravity.tenant_id": tenant_id,
                "gravity.message_id": message_id,
            }
            with tracing.span(_APPEND_SPAN, kind=tracing.SpanKind.PRODUCER, attributes=attributes):
                await _append(producer, key, value, timeout=publish_timeout, seconds=append_seconds)
        else:
            await _append(producer, key, value, timeout=publish_timeout, seconds=append_seconds)
    except (TimeoutError, KafkaError) as exc:
        log.warning(
            "append to %s failed: %s",
            topics.RC_RAW,
            type(exc).__name__,
            extra=ids(tenant_id=tenant_id, message_id=message_id, rc_message_id=sms.rc_message_id),
        )
        raise BrokerUnavailable("the message could not be recorded; retry later") from exc
    log.info(
        "accepted notification",
        extra=ids(tenant_id=tenant_id, message_id=message_id, rc_message_id=sms.rc_message_id),
    )
    return Outcome(appended=True, kind="inbound_sms", rc_message_id=sms.rc_message_id, tenant_id=tenant_id)
