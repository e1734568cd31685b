"""The Kafka helpers the services share, against the session's real broker."""

from __future__ import annotations

import asyncio
import secrets
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from gravity_events.kafka import ensure_topics, offsets_at
from gravity_events.settings import KafkaSettings
from gravity_events.topics import TopicSpec


async def test_offsets_at_is_the_first_record_at_or_after_the_moment_else_the_end(
    kafka_settings: KafkaSettings,
) -> None:
    """Two records on partition 0 and one on partition 1, then a moment, then one more on partition 0. At that
    moment partition 0 starts at its third record and partition 1, with nothing that recent, at its end (1) —
    never at 0, which is what the embedded broker's "no such record" answer would replay from if taken at its
    word. (The broker places records by when it appended them, so the moment is taken from the clock.)"""
    topic = "test.offsets-at." + secrets.token_hex(4)
    await ensure_topics(kafka_settings, [TopicSpec(topic, 2)])
    producer = AIOKafkaProducer(bootstrap_servers=kafka_settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    try:
        for partition in (0, 0, 1):
            await producer.send_and_wait(topic, b"before", partition=partition)
        moment = _clock_ms() + 1  # after every append so far
        while _clock_ms() <= moment:  # the next append is stamped after the moment
            await asyncio.sleep(0.001)
        await producer.send_and_wait(topic, b"after", partition=0)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_settings.kafka_bootstrap_servers)
    await consumer.start()
    try:
        p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
        assert await offsets_at(consumer, [p0, p1], moment) == {p0: 2, p1: 1}
        assert await offsets_at(consumer, [p0, p1], 0) == {p0: 0, p1: 0}
        assert await offsets_at(consumer, [p0, p1], _clock_ms() + 60_000) == {p0: 3, p1: 1}
    finally:
        await consumer.stop()


def _clock_ms() -> int:
    return int(time.time() * 1000)
