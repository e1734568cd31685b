"""Fanout's manual re-send: a delivery request from the registry is a fresh, signed attempt."""

from __future__ import annotations

from tests.fanout.conftest import (
    World,
    deliveries,
    fanout_settings,
    running_fanout,
    sms,
)
from tests.support import (
    eventually,
    publish_events,
    running_receiver,
)

from gravity_events import ids, topics
from gravity_events.codec import encode
from gravity_events.models import DeliveryRequested
from gravity_events.settings import KafkaSettings
from gravity_webhooks import verify


async def test_manual_retry_request(kafka_settings: KafkaSettings, world: World) -> None:
    async with running_receiver() as receiver, running_fanout(fanout_settings(kafka_settings)):
        app_id, secret = await world.app(receiver.url("/manual"))
        event = sms(world.tenant_id, "again")
        request = DeliveryRequested(
            app_id=app_id, tenant_id=world.tenant_id, event=event, requested_at=ids.utcnow()
        )
        await publish_events(kafka_settings, topics.DELIVERY_REQUESTS, (app_id, request))
        [got] = await eventually(lambda: receiver.received("/manual"), timeout=10)
    assert got.body == encode(event)
    verify(secret, got.headers, got.body)
    [attempt] = await deliveries(world, app_id, 1)
    assert attempt.message_id == event.message_id and attempt.succeeded
