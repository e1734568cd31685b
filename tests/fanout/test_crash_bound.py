"""How much a crash re-sends: a hanging app holds the commit point for at most the first-attempt window
plus one attempt's timeout, so a copy killed then re-sends to healthy apps only what it read since; and a
hostile ``Retry-After`` costs one attempt and one retry within a day, never a loop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from asgi_lifespan import LifespanManager
from tests.fanout.conftest import (
    RUNNING,
    World,
    bodies,
    deliveries,
    fanout_settings,
    running_fanout,
)
from tests.support import TopicTail, eventually, keyed_events, running_receiver

from gravity_events import ids, topics
from gravity_events.codec import encode
from gravity_events.models import DeliveryAttempt, DeliveryRetry
from gravity_events.settings import KafkaSettings
from gravity_fanout.app import create_app
from gravity_fanout.settings import Settings

WINDOW = 4.0
"""Wider than the default 1 s so that the healthy app's own burst (60 POSTs, 8 at a time, on a loaded test
box) always starts within it: a healthy job handed off would come back through the retry queue, whose
commit point the hanging app holds too (see ADR 0011), and blur the count this test makes."""
TIMEOUT = 5.0
MARGIN = 4.0
N = 60


async def positions(kafka: KafkaSettings, world: World, count: int) -> list[TopicPartition | int]:
    """(partition, offset) of the tenant's ``count`` messages on ``sms_inbound`` (one partition: keyed by
    tenant), once all are there: ``[tp, first, last]``."""
    async with TopicTail(kafka, topics.SMS_INBOUND, since=world.since) as tail:

        async def found() -> list[Any]:
            mine = [r for r in await tail.poll() if r.key == world.tenant_id.encode()]
            return mine if len(mine) >= count else []

        mine = await eventually(found, timeout=15)
    [partition] = {r.partition for r in mine}
    return [TopicPartition(topics.SMS_INBOUND, partition), mine[0].offset, mine[-1].offset]


@contextlib.asynccontextmanager
async def group_reader(kafka: KafkaSettings, group: str) -> AsyncIterator[AIOKafkaConsumer]:
    """A client of ``group`` that never joins it: only asks what the group committed."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.kafka_bootstrap_servers, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def holds_for(condition: Callable[[], bool], *, seconds: float, interval: float = 0.05) -> None:
    """Poll ``condition`` until ``seconds`` have passed; fail the moment it does not hold."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert condition()
        await asyncio.sleep(interval)  # between polls, let the app run


async def crash(app: Any) -> None:
    """What a killed copy leaves behind for ``sms_inbound``: its group member gone at once, nothing more
    committed (aiokafka's ``stop`` without auto-commit leaves the group without committing), its records in
    hand abandoned."""
    await app.state.inbound._consumer.stop()


async def test_a_hanging_app_holds_the_commit_point_for_at_most_window_plus_timeout(
    kafka_settings: KafkaSettings, world: World
) -> None:
    """Old behaviour: the hanging app's queue (200 deep, 8 workers, 5 s each) held the commit point for
    minutes, and a copy killed then re-sent every message after it to every healthy app."""
    settings = fanout_settings(
        kafka_settings,
        GRAVITY_FANOUT_RETRY_SCHEDULE="[600]",
        GRAVITY_FANOUT_FIRST_ATTEMPT_WINDOW_SECONDS=WINDOW,
        GRAVITY_FANOUT_TIMEOUT_SECONDS=TIMEOUT,
    )
    async with running_receiver() as receiver, group_reader(kafka_settings, settings.consumer_group) as group:
        receiver.behave("/hang", hang=True)
        first = create_app(settings)
        manager = LifespanManager(first, startup_timeout=60, shutdown_timeout=30)
        await manager.__aenter__()
        RUNNING.append(first)
        try:
            await world.app(receiver.url("/hang"))
            await world.app(receiver.url("/ok"))
            sent = time.monotonic()
            batch = await world.send(N, "first")
            tp, _, last = await positions(kafka_settings, world, N)

            async def committed_past(offset: int) -> bool:
                return (await group.committed(tp) or 0) > offset

            await eventually(lambda: len(receiver.received("/ok")) >= N, timeout=WINDOW + TIMEOUT + MARGIN)
            await eventually(lambda: committed_past(last), timeout=WINDOW + TIMEOUT + MARGIN, interval=0.2)
            held = time.monotonic() - sent
            print(f"commit point past {N} messages, one app hanging, after {held:.1f} s")
            assert held < WINDOW + TIMEOUT + MARGIN

            # The next messages reach the healthy app at once; the hanging one holds their commit while
            # its attempts run, and the copy is killed then.
            later = await world.send(20, "later")
            _, _, end = await positions(kafka_settings, world, N + 20)
            await eventually(lambda: len(receiver.received("/ok")) >= N + 20, timeout=30)
            await crash(first)
            cut = await group.committed(tp) or 0
        finally:
            RUNNING.remove(first)
            await manager.__aexit__(None, None, None)
        assert cut > last  # nothing of the first batch is after the commit point
        after = end + 1 - cut

        async with running_fanout(settings):  # the same group: the survivor takes over
            await eventually(
                lambda: committed_past(end), timeout=WINDOW + TIMEOUT + MARGIN + 15, interval=0.2
            )
        resent = len(receiver.received("/ok")) - N - 20
    print(f"re-sent to the healthy app after the crash: {resent} (after the commit point: {after})")
    ok = bodies(receiver, "/ok")
    assert sorted(set(ok)) == sorted(encode(e) for e in batch + later)
    assert resent == after <= len(later)  # exactly what the crashed copy had not committed, no more
    assert all(ok.count(encode(e)) == 1 for e in batch)  # the first batch: never again


BAD_RETRY_AFTER = ("1e12", "inf", "nan", "-1", "Fri, 31 Dec 9999 23:59:59 GMT")


async def test_a_hostile_retry_after_costs_one_attempt_and_a_retry_within_a_day(
    kafka_settings: KafkaSettings, world: World
) -> None:
    settings: Settings = fanout_settings(kafka_settings, GRAVITY_FANOUT_RETRY_SCHEDULE="[600]")
    async with running_receiver() as receiver, running_fanout(settings):
        apps = {}
        for i, value in enumerate(BAD_RETRY_AFTER):
            path = f"/throttled{i}"
            receiver.behave(path, status=429, headers={"retry-after": value})
            apps[path] = (await world.app(receiver.url(path)))[0]
        [event] = await world.send()
        await eventually(lambda: all(receiver.received(p) for p in apps), timeout=15)

        await holds_for(lambda: all(len(receiver.received(p)) == 1 for p in apps), seconds=2.0)

        day = ids.utcnow() + timedelta(days=1)
        for path, app_id in apps.items():
            records = await deliveries(world, app_id, 1)
            attempts = [r for r in records if isinstance(r, DeliveryAttempt)]
            assert len(attempts) == 1, path
            [attempt] = attempts
            assert attempt.message_id == event.message_id and attempt.response_code == 429
            assert attempt.next_attempt_at is not None, path
            assert attempt.attempted_at < attempt.next_attempt_at <= day, (path, attempt.next_attempt_at)
            [retry] = await keyed_events(kafka_settings, topics.FANOUT_RETRY, app_id, since=world.since)
            assert isinstance(retry, DeliveryRetry) and retry.attempt == 2 and retry.due_at <= day
