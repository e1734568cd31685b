"""What ingest does with a notification, testable without HTTP.

The checks run in the contract's order; the first that fails decides the answer. Subscriptions and
their verification-token hashes come from the registry's change stream, never from its database.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from gravity_events import topics
from gravity_events.codec import encode, encode_headers
from gravity_events.ids import utcnow
from gravity_events.kafka import Envelope
from gravity_events.models import RcNotification, SubscriptionActive, SubscriptionRemoved
from gravity_events.ringcentral import (
    NotificationError,
    check_notification_shape,
    extract_inbound_sms,
    is_inbound_sms_event,
    is_renewal_reminder,
)
from gravity_ingest.errors import BrokerUnavailable, InvalidNotification, Unauthorized

__all__ = ["Outcome", "SubscriptionTable", "accept_notification"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Subscription:
    tenant_id: str
    token_sha256: bytes


class SubscriptionTable:
    """subscriptionId → (tenant, token hash), kept current by the change stream."""

    def __init__(self) -> None:
        self._by_id: dict[str, _Subscription] = {}

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


async def accept_notification(
    raw: bytes,
    verification_token: str | None,
    *,
    table: SubscriptionTable,
    producer: AIOKafkaProducer,
    publish_timeout: float,
) -> Outcome:
    """Checks 3 to 6 of the contract (shape, verification, kind, append) for one request body."""
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
        # A renewal reminder needs no action here: the registry's keeper renews on its own schedule.
        log.info("verified %s notification for subscription %s: not stored", kind, subscription_id)
        return Outcome(appended=False, kind=kind)
    try:
        sms = extract_inbound_sms(body)
    except NotificationError as exc:
        raise InvalidNotification(f"inbound SMS notification is unusable: {exc}") from exc
    record = RcNotification(
        tenant_id=tenant_id,
        subscription_id=subscription_id,
        rc_message_id=sms.rc_message_id,
        received_at=utcnow(),
        source="webhook",
        notification=data,
    )
    try:
        await asyncio.wait_for(
            producer.send_and_wait(
                topics.RC_RAW,
                encode(record),
                key=sms.rc_message_id.encode(),
                headers=encode_headers(record),
            ),
            publish_timeout,
        )
    except (TimeoutError, KafkaError) as exc:
        log.warning("append to %s failed: %s", topics.RC_RAW, type(exc).__name__)
        raise BrokerUnavailable("the message could not be recorded; retry later") from exc
    return Outcome(appended=True, kind="inbound_sms", rc_message_id=sms.rc_message_id)
