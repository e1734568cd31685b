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
from tests.support import TopicTail, WebhookReceiver, eventually, keyed_events, running_receiver

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


async def hanging_and_healthy(world: World, receiver: WebhookReceiver) -> str:
    """Two apps of the tenant: ``/hang`` never answers, ``/ok`` answers at once; return the first's id."""
    receiver.behave("/hang", hang=True)
    hang_id, _ = await world.app(receiver.url("/hang"))
    await world.app(receiver.url("/ok"))
    return hang_id


def _hanging_settings(kafka: KafkaSettings, timeout: float) -> Settings:
    return fanout_settings(
        kafka,
        GRAVITY_FANOUT_RETRY_SCHEDULE="[600]",
        GRAVITY_FANOUT_FIRST_ATTEMPT_WINDOW_SECONDS=WINDOW,
        GRAVITY_FANOUT_TIMEOUT_SECONDS=timeout,
    )


async def test_an_app_whose_last_attempt_failed_holds_the_commit_point_for_the_failing_window(
    kafka_settings: KafkaSettings, world: World
) -> None:
    """Old behaviour: an app that had just timed out still held each message for the whole first-attempt
    window (or until its attempts ended), and a copy killed then re-sent all of it to the healthy apps."""
    timeout = 2.0
    settings = _hanging_settings(kafka_settings, timeout)
    async with (
        running_receiver() as receiver,
        group_reader(kafka_settings, settings.consumer_group) as group,
        running_fanout(settings),
    ):
        hang_id = await hanging_and_healthy(world, receiver)
        first = await world.send(1, "first")
        [failed] = await deliveries(world, hang_id, 1, timeout=WINDOW + timeout + MARGIN)
        assert isinstance(failed, DeliveryAttempt) and not failed.succeeded  # the app is not delivering

        later = await world.send(20, "later")  # 8 attempts start and hang, 12 find no free worker
        tp, _, end = await positions(kafka_settings, world, 21)

        async def committed_past_end() -> bool:
            return (await group.committed(tp) or 0) > end

        # within a small part of the 4 s window (and of the 2 s the hanging attempts take): the failing
        # window is 0.1 s, then one write to the broker per job
        await eventually(committed_past_end, timeout=WINDOW / 2, interval=0.1)
        hanging = await keyed_events(
            kafka_settings, topics.FANOUT_RETRY, hang_id, count=20, since=world.since, timeout=15
        )
        assert {r.event.message_id for r in hanging} >= {e.message_id for e in later}  # none dropped
    assert sorted(bodies(receiver, "/ok")) == sorted(encode(e) for e in first + later)


async def test_partitions_taken_away_are_committed_past_every_message_read(
    kafka_settings: KafkaSettings, world: World
) -> None:
    """When the group takes the partitions away (the callback it calls before a rebalance), every
    first-attempt window ends at once, so the commit covers all that was read and the next owner sends
    none of it to the healthy app again. Old behaviour: the hanging app's jobs, waiting out their window,
    kept the commit at the first message, and the next owner re-sent every message."""
    settings = _hanging_settings(kafka_settings, TIMEOUT)
    async with (
        running_receiver() as receiver,
        group_reader(kafka_settings, settings.consumer_group) as group,
        running_fanout(settings) as app,
    ):
        hang_id = await hanging_and_healthy(world, receiver)
        batch = await world.send(20)  # 8 attempts start and hang, 12 wait out the 4 s window
        tp, _, last = await positions(kafka_settings, world, 20)
        await eventually(lambda: len(receiver.received("/ok")) >= 20, timeout=15)

        await app.state.inbound.on_partitions_revoked([tp])
        assert (await group.committed(tp) or 0) > last
        hanging = await keyed_events(
            kafka_settings, topics.FANOUT_RETRY, hang_id, count=20, since=world.since, timeout=15
        )
        assert {r.event.message_id for r in hanging} == {e.message_id for e in batch}
    assert sorted(bodies(receiver, "/ok")) == sorted(encode(e) for e in batch)


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
