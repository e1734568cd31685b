"""Guards: an attempt still under way when the first-attempt window ends no longer holds its message's
commit point. A guard on the retry queue stands for it; the attempt voids the guard when it ends, and a
guard nobody voided (its copy died) makes the attempt again. So a copy killed behind a hanging app re-sends
to a healthy app only what it read in about the last second (ADR 0015)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, TopicPartition
from asgi_lifespan import LifespanManager
from tests.fanout.conftest import RUNNING, World, bodies, fanout_settings, running_fanout
from tests.fanout.test_crash_bound import crash, group_reader, holds_for, positions
from tests.support import eventually, keyed_events, running_receiver

from gravity_events import topics
from gravity_events.codec import encode
from gravity_events.models import DeliveryGuardCleared, DeliveryRetry, SmsInbound
from gravity_events.settings import KafkaSettings
from gravity_fanout.app import create_app
from gravity_fanout.settings import Settings

WINDOW = 0.5
TIMEOUT = 5.0
GRACE = 2.0
DUE = TIMEOUT + GRACE
"""Seconds from an attempt's start to its guard's due time."""


@contextlib.asynccontextmanager
async def killable_fanout(settings: Settings) -> AsyncIterator[object]:
    """A fanout app the block may :func:`crash`; its lifespan ends after the block."""
    app = create_app(settings)
    manager = LifespanManager(app, startup_timeout=60, shutdown_timeout=30)
    await manager.__aenter__()
    RUNNING.append(app)
    try:
        yield app
    finally:
        RUNNING.remove(app)
        await manager.__aexit__(None, None, None)


async def send_one_until_committed(world: World, group: AIOKafkaConsumer) -> SmsInbound:
    """One message of the tenant, once ``group`` committed past it."""
    [event] = await world.send()
    tp, offset, _ = await positions(world.kafka, world, 1)
    assert isinstance(tp, TopicPartition)

    async def committed() -> bool:
        return (await group.committed(tp) or 0) > offset

    await eventually(committed, timeout=DUE, interval=0.1)
    return event


def _settings(kafka: KafkaSettings, window: float = WINDOW) -> Settings:
    return fanout_settings(
        kafka,
        GRAVITY_FANOUT_RETRY_SCHEDULE="[600]",
        GRAVITY_FANOUT_FIRST_ATTEMPT_WINDOW_SECONDS=window,
        GRAVITY_FANOUT_TIMEOUT_SECONDS=TIMEOUT,
        GRAVITY_FANOUT_GUARD_GRACE_SECONDS=GRACE,
    )


async def test_an_attempt_under_way_is_committed_under_a_guard_it_voids(
    kafka_settings: KafkaSettings, world: World
) -> None:
    """Old behaviour: the message was committed only once the hanging attempt had timed out."""
    settings = _settings(kafka_settings)
    async with (
        running_receiver() as receiver,
        group_reader(kafka_settings, settings.consumer_group) as group,
        running_fanout(settings),
    ):
        receiver.behave("/hang", hang=True)
        hang_id, _ = await world.app(receiver.url("/hang"))
        await world.app(receiver.url("/ok"))
        event = await send_one_until_committed(world, group)
        committed_at = time.monotonic()
        first = receiver.received("/hang")[0].at
        assert committed_at < first + TIMEOUT  # the hanging attempt was still under way

        # The attempt times out and is recorded with its retry; it voids its guard, which is never acted on.
        records = await keyed_events(
            kafka_settings, topics.FANOUT_RETRY, hang_id, count=3, since=world.since, timeout=DUE + 10
        )
        [guard] = [r for r in records if isinstance(r, DeliveryRetry) and r.guard_id is not None]
        [cleared] = [r for r in records if isinstance(r, DeliveryGuardCleared)]
        [retry] = [r for r in records if isinstance(r, DeliveryRetry) and r.guard_id is None]
        assert cleared.guard_id == guard.guard_id and guard.attempt == 1 and retry.attempt == 2
        assert guard.event == event
        await eventually(lambda: time.monotonic() > first + DUE + 1.0, timeout=DUE + 5)
        await holds_for(lambda: len(receiver.received("/hang")) == 1, seconds=1.0)
    assert bodies(receiver, "/ok") == [encode(event)]


async def test_a_guard_nobody_voided_makes_the_attempt_again(
    kafka_settings: KafkaSettings, world: World
) -> None:
    """The copy dies with the attempt under way: the next copy attempts again, the healthy app gets
    nothing twice."""
    settings = _settings(kafka_settings)
    async with running_receiver() as receiver, group_reader(kafka_settings, settings.consumer_group) as group:
        receiver.behave("/hang", hang=True)
        await world.app(receiver.url("/hang"))
        await world.app(receiver.url("/ok"))
        async with killable_fanout(settings) as first:
            event = await send_one_until_committed(world, group)
            await crash(first)  # then its lifespan ends: the attempt under way is abandoned, not recorded
        receiver.behave("/hang", status=200)
        async with running_fanout(settings):
            await eventually(lambda: len(receiver.received("/hang")) >= 2, timeout=DUE + 20)
            await holds_for(lambda: len(receiver.received("/ok")) == 1, seconds=1.0)
    assert bodies(receiver, "/hang") == [encode(event)] * 2
    assert bodies(receiver, "/ok") == [encode(event)]


RATE = 20
"""Messages a second."""
SECONDS = 5.0


async def test_a_copy_killed_behind_a_hanging_app_resends_about_its_last_second(
    kafka_settings: KafkaSettings, world: World
) -> None:
    """Old behaviour: the hanging app's attempts under way (8 at a time, 5 s each) held the commit point
    about six seconds behind, and a copy killed then re-sent all of that to the healthy app."""
    settings = _settings(kafka_settings, window=1.0)
    async with running_receiver() as receiver, group_reader(kafka_settings, settings.consumer_group) as group:
        receiver.behave("/hang", hang=True)
        await world.app(receiver.url("/hang"))
        await world.app(receiver.url("/ok"))
        sent: list[tuple[float, int]] = []
        events: list[SmsInbound] = []
        async with killable_fanout(settings) as first:
            batches = int(SECONDS * RATE / 5)
            for i in range(batches):
                events += await world.send(5, f"batch {i}")
                sent.append((time.monotonic(), 5))
                await asyncio.sleep(5 / RATE)  # the load's pace, not a wait for a result
            total = batches * 5
            tp, _, end = await positions(kafka_settings, world, total)
            assert isinstance(tp, TopicPartition) and isinstance(end, int)
            await eventually(lambda: len(receiver.received("/ok")) >= total, timeout=15)
            await crash(first)
            killed = time.monotonic()
            cut = await group.committed(tp) or 0
        last_second = sum(n for at, n in sent if at > killed - settings.first_attempt_window_seconds - 1.0)
        async with running_fanout(settings):
            await eventually(lambda: len(receiver.received("/ok")) >= total + (end + 1 - cut), timeout=30)
            await holds_for(lambda: len(receiver.received("/ok")) == total + (end + 1 - cut), seconds=1.0)
    resent = len(receiver.received("/ok")) - total
    print(
        f"re-sent to the healthy app after the crash: {resent}; sent in the last window + 1 s: {last_second}"
    )
    assert set(bodies(receiver, "/ok")) == {encode(e) for e in events}
    assert resent == end + 1 - cut <= last_second
