"""Reusable test pieces: contract-shaped notifications, topic readers, publishing change events."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from gravity_events import topics
from gravity_events.ids import utcnow
from gravity_events.kafka import make_producer, offsets_at, publish
from gravity_events.models import Event, RcNotification, SubscriptionActive, SubscriptionRemoved
from gravity_events.settings import KafkaSettings

__all__ = [
    "TopicTail",
    "notification",
    "publish_events",
    "raw_event",
    "subscription_active",
    "subscription_removed",
]

SMS_EVENT = "/restapi/v1.0/account/809646016/extension/629893016/message-store/instant?type=SMS"


def notification(subscription_id: str, rc_id: str | None = None, **body: Any) -> dict[str, Any]:
    """The contract's example notification for ``subscription_id``, with a fresh id by default."""
    rc_id = rc_id or str(secrets.randbelow(10**15))
    return {
        "uuid": secrets.token_hex(8),
        "event": SMS_EVENT,
        "timestamp": "2026-03-01T14:30:00.034Z",
        "subscriptionId": subscription_id,
        "ownerId": "629893016",
        "body": {
            "id": rc_id,
            "to": [{"phoneNumber": "+15551234567", "name": "Support", "target": True}],
            "from": {"phoneNumber": "+15559876543", "location": "Mountain View, CA"},
            "type": "SMS",
            "creationTime": "2026-03-01T14:30:00.000Z",
            "lastModifiedTime": "2026-03-01T14:30:00.000Z",
            "readStatus": "Unread",
            "direction": "Inbound",
            "subject": "Yes, I confirm",
            "messageStatus": "Received",
            "conversation": {"id": "1638233798595111162"},
            "eventType": "Create",
            **body,
        },
    }


def subscription_active(tenant_id: str, subscription_id: str, token: str) -> SubscriptionActive:
    """What the registry publishes when a subscription is connected."""
    return SubscriptionActive(
        subscription_id=subscription_id,
        tenant_id=tenant_id,
        verification_token_sha256=hashlib.sha256(token.encode()).hexdigest(),
    )


def subscription_removed(tenant_id: str, subscription_id: str) -> SubscriptionRemoved:
    """What the registry publishes when a subscription is replaced or deleted."""
    return SubscriptionRemoved(subscription_id=subscription_id, tenant_id=tenant_id)


def raw_event(
    tenant_id: str, subscription_id: str, *, received_at: datetime | None = None, **body: Any
) -> RcNotification:
    """What ingest appends for one fresh notification of ``subscription_id``."""
    n = notification(subscription_id, **body)
    return RcNotification(
        tenant_id=tenant_id,
        subscription_id=subscription_id,
        rc_message_id=n["body"]["id"],
        received_at=received_at or utcnow(),
        notification=n,
    )


async def publish_events(settings: KafkaSettings, topic: str, *events: tuple[str, Event]) -> None:
    """Publish (key, event) pairs the way the services do."""
    producer: AIOKafkaProducer = make_producer(settings, client_id="tests")
    await producer.start()
    try:
        for key, event in events:
            await publish(producer, topic, event, key=key)
    finally:
        await producer.stop()


class TopicTail:
    """Reads every partition of a topic from offset 0, or from ``since`` (epoch ms) when given.

    Tests that wait for something they just caused pass ``since`` (taken before causing it): by the later
    modules of a session the canonical and deliveries topics hold hundreds of thousands of records, and
    re-reading them from 0 on every run has taken longer than the test's deadline.
    """

    def __init__(self, settings: KafkaSettings, topic: str, *, since: int | None = None) -> None:
        self.topic = topic
        self.records: list[Any] = []
        self._since = since
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            enable_auto_commit=False,
            fetch_max_wait_ms=10,
        )

    async def __aenter__(self) -> TopicTail:
        await self._consumer.start()
        parts = self._consumer.partitions_for_topic(self.topic) or set()
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        self._consumer.assign(tps)
        starts = await offsets_at(self._consumer, tps, self._since) if self._since else dict.fromkeys(tps, 0)
        for tp, offset in starts.items():
            self._consumer.seek(tp, offset)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def poll(self) -> list[Any]:
        """Read what has arrived since the last poll; return everything read so far."""
        batch = await self._consumer.getmany(timeout_ms=50)
        for records in batch.values():
            self.records.extend(records)
        return self.records


__all__ += ["topics"]
