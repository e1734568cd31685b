"""Reading past an offset that is not visible yet: the embedded broker's S3 engine can make it happen.

Tansu's S3 engine gives a produce request its offsets, then writes the batch as an object. Two producers
writing one partition at once (two ingest copies, two registry copies) can therefore have the later batch
visible before the earlier one: a fetch in that moment answers offsets 230, 232, 233, and a consumer that
takes the answer as it is moves past 231 for good. Measured in the broker-restart chaos test: one message
of 3,000 accepted by ingest and never stored, its raw record at an offset the registry had read past.

Apache Kafka never answers like that: an offset is readable only once everything below it is. Its logs
have gaps only where compaction removed records or around transaction markers; Gravity has no
transactions, and compacted records (and a repack, which keeps timestamps) are old. So a consumer here
reads a partition only up to its first *fresh* gap: when the record after a missing offset is younger than
:data:`GAP_WAIT_MS`, the partition is set back to the missing offset and read again at the next fetch;
once that record is older, the gap is taken as real and reading goes on.

:func:`getmany` is ``AIOKafkaConsumer.getmany`` with that rule; every consumer loop calls it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from gravity_events.lag import assigned_positions

__all__ = ["GAP_WAIT_MS", "getmany", "until_first_fresh_gap"]

log = logging.getLogger(__name__)

GAP_WAIT_MS = 2_000
"""How long a missing offset is waited for, counted from when the record after it was written. Tansu
writes a batch object within milliseconds of giving it its offsets; seconds cover a loaded broker."""


def until_first_fresh_gap(
    records: list[ConsumerRecord], expected: int | None, now_ms: float
) -> tuple[list[ConsumerRecord], int | None]:
    """``records`` of one partition up to the first missing offset whose next record is fresh, and that
    offset (None when there is no such gap). ``expected`` is the offset the first record should have."""
    for i, record in enumerate(records):
        if expected is not None and record.offset > expected and record.timestamp >= now_ms - GAP_WAIT_MS:
            return records[:i], expected
        expected = record.offset + 1
    return records, None


async def getmany(consumer: AIOKafkaConsumer, **kwargs: Any) -> dict[TopicPartition, list[ConsumerRecord]]:
    """``consumer.getmany(**kwargs)``, each partition cut at its first fresh gap and set back to it."""
    before = assigned_positions(consumer)
    batch = await consumer.getmany(**kwargs)
    now_ms = time.time() * 1000
    out = {}
    for tp, records in batch.items():
        kept, gap = until_first_fresh_gap(records, before.get(tp), now_ms)
        if gap is not None:
            log.debug("offset %d of %s is not visible yet; reading it again", gap, tp)
            consumer.seek(tp, gap)
        if kept:
            out[tp] = kept
    return out
