"""Finished work above a retry partition's commit point, written to the partition for its next owner.

The retry consumer commits a partition only up to its first unfinished record, and a hanging app's
retries (its 8 attempts under way, 5 s each, and the backlog waiting for them) keep that point behind
everything read after them: a healthy app's retries handed to the same partition, finished in
milliseconds, sit above it. A copy that then dies, or loses the partition to a rebalance, leaves all of
them uncommitted, and the next owner used to make every one again.

So the owner writes, about every :data:`REPORT_EVERY` seconds and when a partition is taken from it, a
:class:`~gravity_events.models.RetriesFinished` to the partition listing the offsets it finished above
the commit point (:class:`Finished`). A copy given a partition first writes a mark (an empty
``RetriesFinished``) and reads from where it will start up to that mark (:func:`read_finished`); until
then the partition stays paused, and afterwards every listed offset is passed over. What a killed copy
repeats is what it finished in about its last second and what it had under way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition

from gravity_events import gaps
from gravity_events.codec import TYPE_HEADER, CodecError
from gravity_events.kafka import decode_record, record_headers
from gravity_events.models import RetriesFinished
from gravity_fanout.schedule import RETRY_GROUP_HEADER
from gravity_fanout.settings import Settings

__all__ = ["REPORT_EVERY", "SCAN_DEADLINE", "Finished", "ranges", "read_finished"]

log = logging.getLogger(__name__)

REPORT_EVERY = 1.0
"""Seconds between the reports of one consumer (each lists what finished since the last)."""
SCAN_DEADLINE = 60.0
"""Seconds a new owner reads ahead at most before it starts on a partition anyway."""
_FINISHED_TYPE = RetriesFinished.model_fields["type"].default.encode()


def ranges(offsets: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted offsets as inclusive ``(first, last)`` runs."""
    runs: list[tuple[int, int]] = []
    for offset in sorted(offsets):
        if runs and offset == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], offset)
        else:
            runs.append((offset, offset))
    return runs


class Finished:
    """Per partition: offsets this copy finished and has not reported, and offsets a former owner did."""

    def __init__(self) -> None:
        self._unreported: dict[TopicPartition, set[int]] = {}
        self._done: dict[TopicPartition, set[int]] = {}

    def add(self, tp: TopicPartition, offset: int) -> None:
        """This copy finished the record at ``offset``."""
        self._unreported.setdefault(tp, set()).add(offset)

    def take(
        self, tps: Iterable[TopicPartition], committed: Callable[[TopicPartition], int | None]
    ) -> dict[TopicPartition, list[tuple[int, int]]]:
        """What to report for ``tps`` (and forget as reported): finished offsets at or above the commit."""
        out = {}
        for tp in tps:
            floor = committed(tp) or 0
            above = [o for o in self._unreported.pop(tp, ()) if o >= floor]
            if above:
                out[tp] = ranges(above)
        return out

    def pending(self) -> list[TopicPartition]:
        """The partitions with something to report."""
        return [tp for tp, offsets in self._unreported.items() if offsets]

    def load(self, tp: TopicPartition, runs: Iterable[tuple[int, int]]) -> None:
        """A former owner finished these offsets."""
        done = self._done.setdefault(tp, set())
        for first, last in runs:
            done.update(range(first, last + 1))

    def done(self, tp: TopicPartition, offset: int) -> bool:
        """True (and forgotten) if a former owner finished ``offset``."""
        done = self._done.get(tp)
        if done is None or offset not in done:
            return False
        done.remove(offset)
        return True

    def forget(self, tp: TopicPartition) -> None:
        """The partition moved away: what former owners did is the next owner's to read."""
        self._done.pop(tp, None)


async def read_finished(
    settings: Settings,
    group: bytes,
    spans: dict[TopicPartition, tuple[int, int]],
    owned: Callable[[TopicPartition], bool],
) -> dict[TopicPartition, list[tuple[int, int]]]:
    """The finished runs ``group`` reported in each partition between ``(start, end)`` of ``spans`` (end:
    the offset of a mark). A partition this copy stops owning, or not read to its end within
    :data:`SCAN_DEADLINE`, is left out (its records are then all worked on, as without reports)."""
    left = {tp for tp, (start, end) in spans.items() if start < end}
    found: dict[TopicPartition, list[tuple[int, int]]] = {tp: [] for tp in spans}
    if not left:
        return found
    consumer = AIOKafkaConsumer(
        **settings.client_options(),
        group_id=None,
        client_id="gravity-fanout-read-ahead",
        enable_auto_commit=False,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
    )
    await consumer.start()
    try:
        consumer.assign(sorted(left))
        for tp in left:
            consumer.seek(tp, spans[tp][0])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SCAN_DEADLINE
        while left:
            for tp in [tp for tp in left if not owned(tp)]:
                left.discard(tp)
                found.pop(tp, None)
            if not left:
                break
            if loop.time() > deadline:
                log.warning("read-ahead in %s not done in %.0f s; reading on without it", left, SCAN_DEADLINE)
                for tp in left:
                    found.pop(tp, None)
                break
            batch = await gaps.getmany(consumer, timeout_ms=200, max_records=2_000)
            for tp, records in batch.items():
                if tp not in left:
                    continue
                end = spans[tp][1]
                for record in records:
                    if record.offset >= end:
                        left.discard(tp)
                        break
                    headers = record_headers(record)
                    if headers.get(TYPE_HEADER) != _FINISHED_TYPE or headers.get(RETRY_GROUP_HEADER) != group:
                        continue
                    try:
                        event = decode_record(record).event
                    except CodecError:
                        continue  # the retry consumer sets it aside when it reads it
                    if isinstance(event, RetriesFinished):
                        found[tp].extend(event.offsets)
    finally:
        await consumer.stop()
    return found
