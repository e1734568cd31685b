"""Reading a partition only up to its first fresh gap (the S3 engine can show a later batch before an
earlier one written at the same moment; see :mod:`gravity_events.gaps`)."""

from __future__ import annotations

import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord
from tests.support import eventually, publish_events

from gravity_events import gaps, topics
from gravity_events.gaps import GAP_WAIT_MS, until_first_fresh_gap
from gravity_events.models import SmsInbound
from gravity_events.settings import KafkaSettings


def _record(offset: int, timestamp: float) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("t", 0, offset, int(timestamp), 0, None, b"v", None, 0, 1, ())


def test_a_fresh_gap_stops_the_partition_there() -> None:
    """Old behaviour: offsets 230, 232, 233 were all handed on, and 231, written a moment later, never."""
    now = time.time() * 1000
    records = [_record(230, now - 5), _record(232, now - 3), _record(233, now)]
    kept, gap = until_first_fresh_gap(records, 230, now)
    assert [r.offset for r in kept] == [230] and gap == 231


def test_a_gap_before_the_first_record_sets_the_partition_back() -> None:
    now = time.time() * 1000
    kept, gap = until_first_fresh_gap([_record(12, now)], 11, now)
    assert kept == [] and gap == 11


def test_an_old_gap_is_taken_as_real() -> None:
    """Compaction and a repack leave gaps between old records: they cost no wait."""
    now = time.time() * 1000
    old = now - GAP_WAIT_MS - 1
    records = [_record(5, old - 10), _record(9, old), _record(10, now)]
    kept, gap = until_first_fresh_gap(records, 5, now)
    assert [r.offset for r in kept] == [5, 9, 10] and gap is None


def test_contiguous_records_pass_whole() -> None:
    now = time.time() * 1000
    records = [_record(o, now) for o in range(3, 8)]
    assert until_first_fresh_gap(records, 3, now) == (records, None)
    assert until_first_fresh_gap(records, None, now) == (records, None)


async def test_a_real_partition_reads_whole_and_after_a_seek(kafka_settings: KafkaSettings) -> None:
    """On the broker: no gap is seen where there is none, from the start or after seeking back."""
    tenant = "tenant_" + "0" * 15 + "1"
    events = [
        SmsInbound.model_validate(
            {
                "messageId": f"msg_{i:012x}",
                "from": "+15550000001",
                "to": "+15550000002",
                "body": f"gap {i}",
                "rcMessageId": str(i),
                "tenantId": tenant,
                "timestamp": "2026-01-01T00:00:00.000Z",
            }
        )
        for i in range(20)
    ]
    await publish_events(kafka_settings, topics.SMS_INBOUND, *((tenant, e) for e in events))
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_settings.kafka_bootstrap_servers, fetch_max_wait_ms=10
    )
    await consumer.start()
    try:
        tps = [
            TopicPartition(topics.SMS_INBOUND, p)
            for p in consumer.partitions_for_topic(topics.SMS_INBOUND) or ()
        ]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        seen: dict[TopicPartition, list[int]] = {}

        async def mine() -> bool:
            for tp, records in (await gaps.getmany(consumer, timeout_ms=200)).items():
                seen.setdefault(tp, []).extend(r.offset for r in records if tenant.encode() == r.key)
            return sum(len(v) for v in seen.values()) >= len(events)

        await eventually(mine, timeout=15, interval=0.0)
        [(tp, offsets)] = [(tp, o) for tp, o in seen.items() if o]
        assert offsets == list(range(offsets[0], offsets[0] + len(events)))
        consumer.seek(tp, offsets[5])
        again: list[int] = []

        async def rest() -> bool:
            again.extend(r.offset for r in (await gaps.getmany(consumer, timeout_ms=200)).get(tp, []))
            return len(again) >= len(events) - 5

        await eventually(rest, timeout=15, interval=0.0)
        assert again[: len(events) - 5] == offsets[5:]
    finally:
        await consumer.stop()
