"""The projection's consumer: the raw topic in the registry's consumer group, one batch at a time."""

from __future__ import annotations

import asyncpg
from aiokafka import AIOKafkaProducer

from gravity_events import topics
from gravity_events.kafka import Envelope, EventConsumer
from gravity_registry.handlers import project_batch
from gravity_registry.settings import Settings

__all__ = ["make_projection"]


def make_projection(settings: Settings, pool: asyncpg.Pool, producer: AIOKafkaProducer) -> EventConsumer:
    """getmany → project_batch (rows + sms_inbound durable) → commit."""

    async def handle(batch: list[Envelope]) -> None:
        await project_batch(batch, pool=pool, producer=producer)

    return EventConsumer(
        settings,
        topics=[topics.RC_RAW],
        group_id=settings.consumer_group,
        handler=handle,
        producer=producer,
        client_id="gravity-registry",
        max_records=1000,
    )
