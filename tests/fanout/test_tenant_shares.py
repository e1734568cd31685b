"""Per-tenant shares: a tenant with a flood (or hundreds of apps) never takes every in-flight slot of the
inbound consumer nor every retry slot, so another tenant's messages keep being delivered."""

from __future__ import annotations

import time

from tests.fanout.conftest import World, due_retry, fanout_settings, publish_retries, running_fanout, sms
from tests.support import eventually, running_receiver

from gravity_events import ids
from gravity_events.models import DeliveryRetry
from gravity_events.settings import KafkaSettings


async def test_a_flooding_tenant_leaves_in_flight_slots_to_another(
    kafka_settings: KafkaSettings, world: World
) -> None:
    """Old behaviour: tenant A's 200 messages to a hanging endpoint held all 10 in-flight slots, so B's
    message behind them was not even read for minutes."""
    settings = fanout_settings(
        kafka_settings,
        GRAVITY_FANOUT_MAX_IN_FLIGHT=10,
        GRAVITY_FANOUT_TENANT_SHARE=0.5,
        GRAVITY_FANOUT_RETRY_SCHEDULE="[600]",
    )
    other = World(kafka_settings, ids.new_tenant_id())
    async with running_receiver() as receiver, running_fanout(settings):
        receiver.behave("/a", hang=True)
        await world.app(receiver.url("/a"))
        await other.app(receiver.url("/b"))
        await world.send(200, "flood")
        sent = time.monotonic()
        [message] = await other.send(1, "from b")
        [b] = await eventually(lambda: receiver.received("/b"), timeout=15)
        waited = b.at - sent
        pending = 200 - len(receiver.received("/a"))
    print(f"tenant B delivered {waited:.2f} s after its message, tenant A still had {pending} to attempt")
    assert waited < 3.0
    assert pending > 100  # A's backlog was still waiting: B did not wait for it
    assert b.headers["webhook-id"] == message.message_id


async def test_a_tenant_with_many_failing_retries_leaves_retry_slots_to_another(
    kafka_settings: KafkaSettings, world: World
) -> None:
    """Old behaviour: tenant A's two hanging apps took all 4 retry slots (5 s each), and B's due retry
    queued behind them."""
    settings = fanout_settings(
        kafka_settings,
        GRAVITY_FANOUT_RETRY_CONCURRENCY=4,
        GRAVITY_FANOUT_PER_APP_CONCURRENCY=4,
        GRAVITY_FANOUT_TENANT_SHARE=0.5,
    )
    group = settings.consumer_group
    other = World(kafka_settings, ids.new_tenant_id())
    async with running_receiver() as receiver, running_fanout(settings):
        receiver.behave("/a1", hang=True)
        receiver.behave("/a2", hang=True)
        a1, _ = await world.app(receiver.url("/a1"))
        a2, _ = await world.app(receiver.url("/a2"))
        b, _ = await other.app(receiver.url("/b"))
        flood: list[tuple[DeliveryRetry, str]] = [
            (due_retry(world, app_id, sms(world.tenant_id)), group) for app_id in (a1, a2) * 10
        ]
        await publish_retries(kafka_settings, *flood)
        await eventually(lambda: len(receiver.received()) >= 2, timeout=15)  # A's attempts are hanging
        sent = time.monotonic()
        await publish_retries(kafka_settings, (due_retry(other, b, sms(other.tenant_id)), group))
        [got] = await eventually(lambda: receiver.received("/b"), timeout=15)
        hanging = len(receiver.received("/a1")) + len(receiver.received("/a2"))
    print(f"tenant B's retry attempted {got.at - sent:.2f} s after it was due; A had {hanging} attempts open")
    assert got.at - sent < 3.0
    assert hanging <= 2  # A never ran more than its share (2 of 4) at once
