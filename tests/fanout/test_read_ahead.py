"""Reports of what finished above a retry partition's commit point: a hanging app's retries hold that
point, and a copy taking the partition over passes over what its former owner finished behind them
instead of making it again (``gravity_fanout.progress``)."""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition
from tests.fanout.conftest import (
    World,
    bodies,
    due_retry,
    fanout_settings,
    publish_retries,
    running_fanout,
    sms,
)
from tests.fanout.test_crash_bound import group_reader, holds_for
from tests.fanout.test_guards import killable_fanout
from tests.support import TopicTail, eventually, running_receiver

from gravity_events import topics
from gravity_events.codec import decode, encode
from gravity_events.kafka import record_headers
from gravity_events.models import RetriesFinished
from gravity_events.settings import KafkaSettings
from gravity_fanout.schedule import RETRY_GROUP_HEADER

HANGING = 20
"""Retries of the hanging app at the head of the partition: more than its 8 attempts at once."""
HEALTHY = 30
"""Retries of the healthy app behind them."""


async def crash_retries(app: Any) -> None:
    """What a killed copy leaves behind for the retry queue: its group member gone, nothing more
    committed, its attempts under way abandoned (see ``test_crash_bound.crash``)."""
    await app.state.retries._consumer.stop()


async def reported(kafka: KafkaSettings, world: World, group: str, offsets: set[int]) -> None:
    """Wait until ``group`` has reported every one of ``offsets`` of retry partition 0 as finished."""
    async with TopicTail(kafka, topics.FANOUT_RETRY, since=world.since) as tail:

        async def covered() -> bool:
            listed: set[int] = set()
            for record in await tail.poll():
                headers = record_headers(record)
                if record.partition != 0 or headers.get(RETRY_GROUP_HEADER) != group.encode():
                    continue
                event = decode(record.topic, record.value, list(headers.items()))
                if isinstance(event, RetriesFinished):
                    listed.update(o for first, last in event.offsets for o in range(first, last + 1))
            return offsets <= listed

        await eventually(covered, timeout=15, interval=0.1)


async def healthy_offsets(kafka: KafkaSettings, world: World, app_id: str) -> set[int]:
    """The offsets on retry partition 0 of the ``HEALTHY`` retries of ``app_id``."""
    async with TopicTail(kafka, topics.FANOUT_RETRY, since=world.since) as tail:

        async def found() -> set[int]:
            mine = {r.offset for r in await tail.poll() if r.partition == 0 and r.key == app_id.encode()}
            return mine if len(mine) >= HEALTHY else set()

        return await eventually(found, timeout=15)


async def test_a_copy_taking_a_retry_partition_over_passes_over_what_its_owner_finished(
    kafka_settings: KafkaSettings, world: World
) -> None:
    """Old behaviour: the hanging app's retries held partition 0's commit point, and the copy that took
    the partition over made the healthy app's 30 finished retries behind them again."""
    settings = fanout_settings(
        kafka_settings, GRAVITY_FANOUT_RETRY_SCHEDULE="[600]", GRAVITY_FANOUT_TIMEOUT_SECONDS=10
    )
    group = settings.consumer_group
    async with running_receiver() as receiver:
        receiver.behave("/hang", hang=True)
        hang_id, _ = await world.app(receiver.url("/hang"))
        ok_id, _ = await world.app(receiver.url("/ok"))
        last_id, _ = await world.app(receiver.url("/last"))
        events = [sms(world.tenant_id, f"retry {i}") for i in range(HEALTHY)]
        await publish_retries(
            kafka_settings,
            *((due_retry(world, hang_id, e), group) for e in events[:HANGING]),
            *((due_retry(world, ok_id, e), group) for e in events),
        )
        offsets = await healthy_offsets(kafka_settings, world, ok_id)
        async with killable_fanout(settings) as first:
            await eventually(lambda: len(receiver.received("/ok")) >= HEALTHY, timeout=30)
            await reported(kafka_settings, world, group, offsets)
            assert len(receiver.received("/hang")) == 8  # under way: none of them ended
            await crash_retries(first)
        await publish_retries(kafka_settings, (due_retry(world, last_id, events[0]), group))
        async with running_fanout(settings):
            await eventually(lambda: len(receiver.received("/last")) >= 1, timeout=30)
            await holds_for(lambda: len(receiver.received("/ok")) == HEALTHY, seconds=1.0)
        assert len(receiver.received("/hang")) > 8  # the second copy made the unfinished ones again
    assert sorted(bodies(receiver, "/ok")) == sorted(encode(e) for e in events)


async def test_a_retry_partition_taken_away_waits_for_the_retries_in_hand(
    kafka_settings: KafkaSettings, world: World
) -> None:
    """When the group takes a retry partition away (the callback it calls before a rebalance), the copy
    lets the retries it holds finish and commits past them, so the next owner starts after them. Old behaviour:
    it reported what had finished so far and the partition moved with the rest still queued behind the
    app's limit; they finished after the next owner had read ahead, and it made them again."""
    settings = fanout_settings(
        kafka_settings, GRAVITY_FANOUT_RETRY_SCHEDULE="[600]", GRAVITY_FANOUT_PER_APP_CONCURRENCY=1
    )
    group = settings.consumer_group
    async with running_receiver() as receiver:
        receiver.behave("/ok", delay=0.02)  # one at a time: 30 of 20 ms each, well inside the wait
        ok_id, _ = await world.app(receiver.url("/ok"))
        events = [sms(world.tenant_id, f"retry {i}") for i in range(HEALTHY)]
        await publish_retries(kafka_settings, *((due_retry(world, ok_id, e), group) for e in events))
        offsets = await healthy_offsets(kafka_settings, world, ok_id)
        tp = TopicPartition(topics.FANOUT_RETRY, 0)
        async with group_reader(kafka_settings, group + "-retry") as reader, running_fanout(settings) as app:
            await eventually(lambda: receiver.received("/ok"), timeout=30)
            await app.state.retries.on_partitions_revoked([tp])
            assert len(receiver.received("/ok")) == HEALTHY  # all made before the partition moves
            assert (await reader.committed(tp) or 0) > max(offsets)
    assert sorted(bodies(receiver, "/ok")) == sorted(encode(e) for e in events)
