"""Fanout under a flood: 5,000 messages to a slow endpoint are deferred to the retry queue, not buffered.

In a module of its own: the flood fills its broker's partitions, which the other fanout tests need not read.
"""

from __future__ import annotations

import pytest
from tests.fanout.conftest import (
    World,
    bodies,
    fanout_settings,
    running_fanout,
)
from tests.support import (
    eventually,
    keyed_events,
    running_receiver,
)

from gravity_events import topics
from gravity_events.codec import encode
from gravity_events.models import DeliveryGuardCleared, DeliveryRetry
from gravity_events.settings import KafkaSettings

FLOOD = 5_000
"""Enough to fill the slow lane 250 times over; the deferrals stay well below the partition limit the
suite enforces on its brokers."""


@pytest.mark.timeout(240)
async def test_a_flood_to_a_slow_endpoint_is_deferred_not_buffered(
    kafka_settings: KafkaSettings, world: World
) -> None:
    settings = fanout_settings(
        kafka_settings,
        GRAVITY_FANOUT_PER_APP_QUEUE=20,
        GRAVITY_FANOUT_PER_APP_CONCURRENCY=2,
        GRAVITY_FANOUT_RETRY_SCHEDULE="[600]",
        GRAVITY_FANOUT_RETRY_CONCURRENCY=4,
    )
    async with running_receiver() as receiver, running_fanout(settings):
        receiver.behave("/slow", delay=0.5)
        app_id, _ = await world.app(receiver.url("/slow"))
        await world.app(receiver.url("/fast"))
        events = await world.send(FLOOD)
        await eventually(lambda: len(receiver.received("/fast")) >= FLOOD, timeout=180)
        queued = await keyed_events(
            kafka_settings, topics.FANOUT_RETRY, app_id, count=FLOOD // 2, since=world.since, timeout=30
        )
    # the fast app got every message once: the slow one's full lane cost it nothing
    assert sorted(bodies(receiver, "/fast")) == sorted(encode(e) for e in events)
    # the slow lane held at most 20 jobs; most of the rest went to the durable retry queue as first
    # attempts due at once (a failed attempt's retry would be attempt 2, due 600 s later), each message once
    # (an attempt that outlasted the window on this loaded box left a guard and its voiding record)
    assert all(isinstance(q, DeliveryRetry | DeliveryGuardCleared) for q in queued)
    deferred = [q for q in queued if isinstance(q, DeliveryRetry) and q.guard_id is None]
    assert all(q.attempt == 1 and q.due_at == q.first_attempted_at for q in deferred)
    assert len({q.event.message_id for q in deferred}) == len(deferred) >= FLOOD // 4
