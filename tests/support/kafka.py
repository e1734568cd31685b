"""Kafka helpers: publish events the way the services do, and read a topic back from a point in time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from gravity_events.codec import decode, encode, encode_headers
from gravity_events.kafka import make_producer, offsets_at
from gravity_events.models import Event
from gravity_events.settings import KafkaSettings
from tests.support.waits import eventually

__all__ = ["TopicTail", "keyed_events", "publish_events"]


async def publish_events(settings: KafkaSettings, topic: str, *events: tuple[str, Event]) -> None:
    """Publish (key, event) pairs as the services do (codec, headers, key), in order; return once the
    broker has acknowledged every one.

    The records go out without waiting for each acknowledgement, so the producer batches them: a flood
    sent one record per batch takes minutes, and leaves partitions of single-record batches that the
    embedded broker fetches ever more slowly.
    """
    producer: AIOKafkaProducer = make_producer(settings, client_id="tests")
    await producer.start()
    try:
        acks = [
            await producer.send(topic, encode(event), key=key.encode(), headers=encode_headers(event))
            for key, event in events
        ]
        await asyncio.gather(*acks)
    finally:
        await producer.stop()


class TopicTail:
    """Reads every partition of a topic from offset 0, or from ``since`` (epoch ms) when given.

    Tests that wait for something they just caused pass ``since`` (taken before causing it): by the later
    modules of a session the canonical and deliveries topics hold hundreds of thousands of records, and
    re-reading them from 0 on every run has taken longer than the test's deadline.
    """

    def __init__(self, settings: KafkaSettings, topic: str, *, since: int | None = None) -> None:
        self.topic = topic
        self.records: list[Any] = []
        self._since = since
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            enable_auto_commit=False,
            fetch_max_wait_ms=10,
        )

    async def __aenter__(self) -> TopicTail:
        await self._consumer.start()
        parts = self._consumer.partitions_for_topic(self.topic) or set()
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        self._consumer.assign(tps)
        starts = await offsets_at(self._consumer, tps, self._since) if self._since else dict.fromkeys(tps, 0)
        for tp, offset in starts.items():
            self._consumer.seek(tp, offset)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def poll(self) -> list[Any]:
        """Read what has arrived since the last poll; return everything read so far."""
        batch = await self._consumer.getmany(timeout_ms=50)
        for records in batch.values():
            self.records.extend(records)
        return self.records


async def keyed_events(
    kafka: KafkaSettings,
    topic: str,
    key: str,
    *,
    count: int = 1,
    since: int | None = None,
    where: Callable[[Any], bool] | None = None,
    timeout: float = 15.0,
) -> list[Any]:
    """The decoded events of ``key`` on ``topic`` (those ``where`` accepts), once there are ``count``.

    Reads from ``since`` (epoch ms) when given, else from offset 0; returns every match read so far, in
    partition order, and fails when fewer than ``count`` have arrived within ``timeout``.
    """
    async with TopicTail(kafka, topic, since=since) as tail:

        async def enough() -> list[Any]:
            found = [decode(topic, r.value, r.headers) for r in await tail.poll() if r.key == key.encode()]
            if where is not None:
                found = [e for e in found if where(e)]
            return found if len(found) >= count else []

        return await eventually(enough, timeout=timeout)
