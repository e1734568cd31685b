"""Manual re-sends asked through the registry API (``POST …/deliveries/{messageId}/retry``).

Read from ``gravity.fanout.requests.v1`` in the group ``<group>-requests`` with the shared
:class:`~gravity_events.kafka.EventConsumer` (batch → handler → commit): each request is a fresh delivery,
attempt 1 with normal retries, also to a disabled app (it is an explicit request).
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer

from gravity_events import topics
from gravity_events.kafka import Envelope, EventConsumer
from gravity_events.models import DeliveryRequested
from gravity_fanout.apps import AppTable
from gravity_fanout.handlers import Deliverer
from gravity_fanout.settings import Settings

__all__ = ["make_request_consumer"]

log = logging.getLogger(__name__)


def make_request_consumer(
    settings: Settings, apps: AppTable, deliverer: Deliverer, producer: AIOKafkaProducer
) -> EventConsumer:
    """The consumer of manual re-sends: a fresh delivery per request, attempt 1."""

    async def handle(batch: list[Envelope]) -> None:
        jobs = []
        for envelope in batch:
            request = envelope.event
            if not isinstance(request, DeliveryRequested):
                continue
            app = apps.get(request.app_id)
            if app is None or not app.webhook_url or not app.secrets:
                log.info("manual delivery to app %s skipped: it has no webhookUrl", request.app_id)
                continue
            jobs.append(deliverer.attempt(app, request.event, attempt=1, headers=envelope.headers))
        await asyncio.gather(*jobs)

    return EventConsumer(
        settings,
        topics=[topics.DELIVERY_REQUESTS],
        group_id=settings.consumer_group + "-requests",
        handler=handle,
        producer=producer,
        client_id="gravity-fanout",
    )
