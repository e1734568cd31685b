"""The registry's two consumers: the projection (raw topic) and the delivery log (deliveries topic), each
in its own consumer group, one batch at a time."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
from aiokafka import AIOKafkaProducer

from gravity_events import topics
from gravity_events.kafka import Envelope, EventConsumer
from gravity_registry.handlers.deliveries import project_deliveries
from gravity_registry.handlers.outbox import OutboxPublisher
from gravity_registry.handlers.projection import project_batch
from gravity_registry.settings import Settings

if TYPE_CHECKING:
    from gravity_service.metrics import RegistryMetrics

__all__ = ["make_delivery_log", "make_projection"]


def make_projection(
    settings: Settings,
    pool: asyncpg.Pool,
    producer: AIOKafkaProducer,
    metrics: RegistryMetrics | None = None,
) -> EventConsumer:
    """getmany → project_batch (rows + sms_inbound durable) → commit."""

    async def handle(batch: list[Envelope]) -> None:
        await project_batch(
            batch,
            pool=pool,
            producer=producer,
            lock_timeout=settings.order_lock_timeout_seconds,
            metrics=metrics,
        )

    return EventConsumer(
        settings,
        topics=[topics.RC_RAW],
        group_id=settings.consumer_group,
        handler=handle,
        producer=producer,
        client_id="gravity-registry",
        max_records=1000,
    )


def make_delivery_log(
    settings: Settings, pool: asyncpg.Pool, producer: AIOKafkaProducer, outbox: OutboxPublisher
) -> EventConsumer:
    """getmany → attempts stored, disable decisions applied (outbox woken) → commit."""

    async def handle(batch: list[Envelope]) -> None:
        if await project_deliveries(batch, pool=pool):
            outbox.wake()

    return EventConsumer(
        settings,
        topics=[topics.DELIVERIES],
        group_id=settings.consumer_group + "-deliveries",
        handler=handle,
        producer=producer,
        client_id="gravity-registry",
        max_records=1000,
    )
