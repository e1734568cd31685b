"""In-flight windows: which records of a partition this copy is working on, and the offset it may commit.

Fanout's inbound and retry consumers do not handle a batch and then commit it: each record is worked on by
a task of its own while the consumer reads on. A partition's offset is committed only up to its first
unfinished record (at-least-once), and ``max_in_flight`` bounds the records read and not finished; beyond
it the consumer stops fetching. :class:`WindowedConsumer` is that loop; :class:`Window` and
:class:`Windows` are its bookkeeping, kept per partition across rebalances.
"""

from __future__ import annotations

import asyncio
import logging
from abc import abstractmethod
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from gravity_events import gaps
from gravity_events.lag import partition_lag
from gravity_fanout.settings import Settings

__all__ = ["REVOKE_SETTLE", "Window", "WindowedConsumer", "Windows"]

log = logging.getLogger(__name__)

REVOKE_SETTLE = 2.0
"""Seconds a rebalance waits for the records in hand before it commits and the partitions move: what
finishes by then is not made again by the next owner."""

RETRY_PAUSE = 1.0
"""Seconds before work whose effects could not be recorded (the broker refused them) is tried again."""


@dataclass
class Window:
    """One partition as this copy read it: offsets in order, True once finished.

    Kept when a rebalance takes the partition away (this copy's tasks go on with what they hold), so a
    rebalance that gives it back does not start those records a second time: reading resumes at
    ``read_to``, not at the group's older committed offset.
    """

    read_to: int
    """The next offset to read: everything below was read by this copy (or committed by the group)."""
    offsets: OrderedDict[int, bool] = field(default_factory=OrderedDict)
    committed_to: int | None = None
    """The last offset this copy committed successfully."""

    def add(self, offset: int) -> bool:
        """Register a record; False when this copy has it already."""
        if offset < self.read_to:
            return False
        self.offsets[offset] = False
        self.read_to = offset + 1
        return True

    def forget_below(self, offset: int) -> None:
        """The group committed ``offset`` while the partition was elsewhere: what is below is not ours."""
        while self.offsets and next(iter(self.offsets)) < offset:
            self.offsets.popitem(last=False)
        self.read_to = max(self.read_to, offset)

    def position(self) -> int:
        """The offset to commit: the first unfinished one, or ``read_to`` when everything read finished."""
        while self.offsets:
            offset, finished = next(iter(self.offsets.items()))
            if not finished:
                return offset
            self.offsets.popitem(last=False)
        return self.read_to


class Windows:
    """A consumer's windows and the partitions it owns: what to read, what to skip, what to commit.

    ``start`` gives the first offset of a partition the group never committed (each consumer has its own
    idea of where a brand-new group starts).
    """

    def __init__(self, consumer: AIOKafkaConsumer, start: Callable[[TopicPartition], Awaitable[int]]) -> None:
        self._consumer = consumer
        self._start = start
        self._windows: dict[TopicPartition, Window] = {}
        self._owned: set[TopicPartition] = set()

    def take(self, tp: TopicPartition, offset: int) -> bool:
        """Register a record to work on; False if the partition is not owned or this copy has it already."""
        window = self._windows.get(tp)
        return tp in self._owned and window is not None and window.add(offset)

    def owns(self, tp: TopicPartition) -> bool:
        """Whether the partition is assigned to this copy now."""
        return tp in self._owned

    def read_to(self, tp: TopicPartition) -> int | None:
        """The next offset this copy reads in ``tp`` (None for a partition it never had)."""
        window = self._windows.get(tp)
        return None if window is None else window.read_to

    def committed_to(self, tp: TopicPartition) -> int | None:
        """The last offset committed for ``tp`` as this copy knows it."""
        window = self._windows.get(tp)
        return None if window is None else window.committed_to

    def finish(self, tp: TopicPartition, offset: int) -> None:
        """The work of a taken record is done."""
        window = self._windows.get(tp)
        if window is not None and offset in window.offsets:
            window.offsets[offset] = True

    async def revoked(self, revoked: list[TopicPartition]) -> None:
        """Commit what finished before the partitions move; keep their windows (see :class:`Window`)."""
        await self.commit()
        self._owned.difference_update(revoked)

    async def assigned(self, assigned: list[TopicPartition]) -> None:
        """Resume where this copy stopped reading, else at the committed offset, else at ``start``.

        A partition coming back to this copy resumes at its window's ``read_to`` unless the group committed
        further meanwhile.
        """
        windows = {}
        for tp in assigned:
            committed = await self._consumer.committed(tp)
            window = self._windows.get(tp)
            if window is not None:
                if committed is not None:
                    window.forget_below(committed)
                    window.committed_to = committed
            elif committed is not None:
                window = Window(read_to=committed, committed_to=committed)
            else:
                window = Window(read_to=await self._start(tp))
            windows[tp] = window
        # While this ran, the fetcher may have handed the run loop records of these partitions (skipped
        # there: not owned yet) and so moved their positions: each is set here, with ownership, at once.
        for tp, window in windows.items():
            self._windows[tp] = window
            self._consumer.seek(tp, window.read_to)
            self._owned.add(tp)

    async def commit(self) -> None:
        """Commit each owned partition's position when it moved (or a commit was refused since)."""
        offsets = {}
        for tp in self._owned:
            position = self._windows[tp].position()
            if position != self._windows[tp].committed_to:
                offsets[tp] = OffsetAndMetadata(position, "")
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except Exception:  # a rebalance in progress, the broker away: the next commit catches up
            log.debug("commit of %s refused; retried with the next one", offsets, exc_info=True)
            return
        for tp, meta in offsets.items():
            self._windows[tp].committed_to = meta.offset


async def _slot_or_stop(slots: asyncio.Semaphore, stopped: asyncio.Event) -> bool:
    """Take a slot; False, holding none, if stopping comes first (a full window must not block shutdown)."""
    if stopped.is_set():
        return False
    if not slots.locked():
        await slots.acquire()  # free: immediate
        return True
    acquire = asyncio.ensure_future(slots.acquire())
    stop = asyncio.ensure_future(stopped.wait())
    await asyncio.wait({acquire, stop}, return_when=asyncio.FIRST_COMPLETED)
    stop.cancel()
    if acquire.done() and not acquire.cancelled():
        return True
    acquire.cancel()
    return False


class WindowedConsumer(ConsumerRebalanceListener):  # type: ignore[misc]
    """A group member of one topic: ``getmany`` → :meth:`_handle` → commit the finished prefix; stop; drain.

    A subclass says where a partition the group never committed starts (:meth:`_start_position`) and what
    a batch of one partition becomes (:meth:`_handle`), usually a task per record through :meth:`_spawn`.
    """

    def __init__(self, settings: Settings, *, topic: str, group_id: str, max_records: int) -> None:
        self._topic = topic
        self._max_records = max_records
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._stopped = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.assigned = asyncio.Event()
        """Set once the group gave this copy its partitions and their positions are fixed."""
        self.lag_group = group_id
        """The ``group`` label of this consumer's lag (``gravity_kafka_consumer_lag``)."""
        self._consumer = AIOKafkaConsumer(
            **settings.client_options(),
            group_id=group_id,
            client_id="gravity-fanout",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=min(1_000, settings.kafka_session_timeout_ms // 3),
            max_poll_interval_ms=300_000,
        )
        self._windows = Windows(self._consumer, self._start_position)

    async def start(self) -> None:
        """Connect and join the group."""
        await self._consumer.start()
        self._consumer.subscribe([self._topic], listener=self)

    def stop(self) -> None:
        """Stop reading; the loop commits what finished and returns."""
        self._stopped.set()

    async def close(self) -> None:
        """Wait for the records in hand, leave the group.

        Sets the stop flag first: work that could not be recorded must give up rather than wait to be
        tried again, even when the loop ended without :meth:`stop` (it died).
        """
        self._stopped.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._closed = True
        await self._consumer.stop()

    def lag(self) -> dict[TopicPartition, int]:
        """Records behind the end of each assigned partition (see :func:`partition_lag`); none once closed."""
        return {} if self._closed else partition_lag(self._consumer)

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Commit what finished before the partitions move; keep their windows (see :class:`Window`)."""
        await self._windows.revoked(revoked)

    async def _settle(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the records in hand to finish."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        """Resume where this copy stopped reading, else at the committed offset, else at the start."""
        await self._windows.assigned(assigned)
        self.assigned.set()

    async def run(self) -> None:
        """Read, hand each partition's records to :meth:`_handle`, commit what finished, until stopped."""
        while not self._stopped.is_set():
            self._before_fetch()
            batch = await gaps.getmany(self._consumer, timeout_ms=100, max_records=self._max_records)
            for tp, records in batch.items():
                await self._handle(tp, records)
            await self._windows.commit()
            self._after_commit()
        await self._windows.commit()

    @abstractmethod
    async def _start_position(self, tp: TopicPartition) -> int:
        """The first offset of a partition the group never committed."""

    @abstractmethod
    async def _handle(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        """Act on records of one partition, in order (taking each in :attr:`_windows` before its work)."""

    def _before_fetch(self) -> None:
        """Called before each fetch (nothing by default)."""

    def _after_commit(self) -> None:
        """Called after each commit of the loop (nothing by default)."""

    def _finished_work(self, tp: TopicPartition, offset: int) -> None:
        """Called when the work of a record :meth:`_spawn` started finished (nothing by default)."""

    async def _spawn(self, tp: TopicPartition, offset: int, work: Callable[[], Awaitable[bool]]) -> bool:
        """Start ``work`` for the record on a task of its own, once an in-flight slot is free.

        The record counts as finished when ``work`` returns True; False or an error leaves it unfinished
        (read again after a restart). Returns False, starting nothing, when stopping came first: the
        caller reads no further in this partition. A record this copy has already, or of a partition it
        no longer owns, is passed over.
        """
        if not await _slot_or_stop(self._slots, self._stopped):
            return False
        if not self._windows.take(tp, offset):
            self._slots.release()  # moved away meanwhile, or this copy has it already
            return True
        task = asyncio.create_task(self._track(tp, offset, work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _pause_or_stop(self) -> bool:
        """Wait ``RETRY_PAUSE`` before trying failed work again; False at once when stopping."""
        if self._stopped.is_set():
            return False
        await asyncio.sleep(RETRY_PAUSE)
        return True

    async def _track(self, tp: TopicPartition, offset: int, work: Callable[[], Awaitable[bool]]) -> None:
        try:
            if await work():
                self._windows.finish(tp, offset)
                self._finished_work(tp, offset)
        except Exception:
            log.exception("record at %s/%s could not be handled; it will be read again", tp, offset)
        finally:
            self._slots.release()
