"""The durable retry queue's consumer: due retries from ``gravity.fanout.retry.v1``.

A record not yet due pauses its partition (one partition per range of delays, so the head is always the
next due; see :func:`gravity_fanout.schedule.retry_partition`) until it is. Due retries run side by side
(per-app and overall limits) and commit like first attempts (see :mod:`gravity_fanout.windows`). Records
another deployment scheduled (another consumer group, see ``RETRY_GROUP_HEADER``) are skipped.

One tenant runs at most ``GRAVITY_FANOUT_TENANT_SHARE`` of the ``retry_concurrency`` attempts at once, so
a tenant with a flood of retries (or hundreds of failing apps) always leaves slots to the others.

What finishes above a partition's commit point is reported to the partition, and a copy given a partition
reads ahead to learn it before starting (see :mod:`gravity_fanout.progress`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from functools import partial

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from gravity_events import topics
from gravity_events.codec import CodecError
from gravity_events.kafka import dead_letter, decode_record, record_headers
from gravity_events.models import DeliveryGuardCleared, DeliveryRetry
from gravity_events.tracing import Headers
from gravity_fanout.apps import AppTable
from gravity_fanout.handlers import Deliverer
from gravity_fanout.progress import REPORT_EVERY, Finished, read_finished
from gravity_fanout.schedule import RETRY_GROUP_HEADER
from gravity_fanout.settings import Settings
from gravity_fanout.windows import REVOKE_SETTLE, WindowedConsumer

__all__ = ["Gates", "Guards", "RetryConsumer"]

log = logging.getLogger(__name__)

MAX_PAUSE = 60.0
"""Seconds a partition stays paused at most before its head is read again."""
GUARD_POLL = 0.1
"""Seconds between looks, for a due guard, at whether its partition has been read far enough."""
CLEARED_TTL = 3600.0
"""Seconds a voided guard id is remembered when its guard is never read."""
REPORT_TIMEOUT = 5.0
"""Seconds a report of what finished may take when a partition is taken away or the consumer closes."""
REPORT_RUNS = 500
"""Finished runs per record at most (a record stays small whatever the spread)."""


class Gates:
    """At most ``limit`` holders per key (an app, a tenant); a key nobody holds or waits for is forgotten."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._gates: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Hold one of ``key``'s places for the block (waiting for one first)."""
        gate, users = self._gates.setdefault(key, (asyncio.Semaphore(self._limit), [0]))
        users[0] += 1
        try:
            async with gate:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._gates[key]


class Guards:
    """What a retry consumer knows of guards: the ids voided in each partition, and how far in time each
    partition has been read.

    A guard and the record voiding it share a partition, and the voiding record is written before the
    guard's horizon (``GRAVITY_FANOUT_GUARD_GRACE_SECONDS`` after the attempt's timeout). So once a
    partition has been read up to a record written after a guard's horizon, a voiding record not seen by
    then was never written. When no such record comes (a quiet partition), the consumer writes one, a
    mark, and reads up to it. Being "caught up" by a fetch's high watermark is no proof: a guard was acted
    on at lag 0 while its voiding record, written half a minute before, was in the partition still unread.
    Voided ids are forgotten when their guard is read, or after ``CLEARED_TTL`` seconds (a guard that was
    never recorded, or a mark).
    """

    def __init__(self) -> None:
        self._cleared: dict[TopicPartition, OrderedDict[str, float]] = {}
        self._read_to: dict[TopicPartition, int] = {}
        """Per partition, the timestamp (ms) of the latest record looked at: everything before it was read."""
        self._marked_at: dict[TopicPartition, float] = {}
        """Per partition, when (epoch ms) this copy last wrote a mark to it."""

    def seen(self, tp: TopicPartition, timestamp: int) -> None:
        self._read_to[tp] = max(self._read_to.get(tp, 0), timestamp)

    def clear(self, tp: TopicPartition, guard_id: str) -> None:
        cleared = self._cleared.setdefault(tp, OrderedDict())
        now = time.monotonic()
        cleared[guard_id] = now
        while cleared and next(iter(cleared.values())) < now - CLEARED_TTL:
            cleared.popitem(last=False)

    def cleared(self, tp: TopicPartition, guard_id: str) -> bool:
        """True (and forgotten) if ``guard_id`` was voided."""
        cleared = self._cleared.get(tp)
        return cleared is not None and cleared.pop(guard_id, None) is not None

    def read_past(self, tp: TopicPartition, horizon_ms: float) -> bool:
        """Whether a record written after ``horizon_ms`` was read."""
        return self._read_to.get(tp, 0) > horizon_ms

    def mark_due(self, tp: TopicPartition, horizon_ms: float, now_ms: float) -> bool:
        """Whether to write a mark now: the horizon has passed and no mark was written since (one mark
        serves every guard of the partition waiting on an earlier horizon)."""
        if now_ms <= horizon_ms or self._marked_at.get(tp, 0) > horizon_ms:
            return False
        self._marked_at[tp] = now_ms
        return True


class RetryConsumer(WindowedConsumer):
    """Due retries from the retry queue; a partition whose head is not due yet is paused until it is.

    Each due retry runs on its own task: at most ``per_app_concurrency`` attempts per app and
    ``retry_concurrency`` in all at once (a tenant at most its share of those), while the consumer reads on,
    so a hanging endpoint's retries wait for that endpoint only, never another app's. Offsets are committed
    for the finished prefix of each partition (as for first attempts); ``max_in_flight`` bounds the retries
    read and not finished.
    """

    def __init__(
        self, settings: Settings, apps: AppTable, deliverer: Deliverer, producer: AIOKafkaProducer
    ) -> None:
        super().__init__(
            settings, topic=topics.FANOUT_RETRY, group_id=settings.consumer_group + "-retry", max_records=200
        )
        self._apps = apps
        self._deliverer = deliverer
        self._producer = producer
        self._concurrency = asyncio.Semaphore(settings.retry_concurrency)
        self._app_gates = Gates(settings.per_app_concurrency)
        self._tenant_gates = Gates(settings.tenant_cap(settings.retry_concurrency))
        self._metrics = deliverer.metrics
        self._group = settings.consumer_group.encode()
        self._paused_until: dict[TopicPartition, float] = {}
        self._guards = Guards()
        self._guard_grace_ms = settings.guard_grace_seconds * 1000
        self._settings = settings
        self._finished = Finished()
        self._reading_ahead: dict[TopicPartition, object] = {}
        """The partitions paused until this copy has read ahead in them, each with its read's token."""
        self._reported_at = 0.0
        self._reporting: asyncio.Task[None] | None = None

    async def close(self) -> None:
        """Abandon the attempts in hand (not committed: read again after a restart), report what finished
        above the commit points, leave the group."""
        for task in self._tasks:
            task.cancel()
        if self._reporting is not None:  # a periodic report under way holds runs already taken
            await asyncio.wait({self._reporting}, timeout=REPORT_TIMEOUT)
            self._reporting.cancel()
        await self._report_now(self._finished.pending())
        await super().close()

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Wait for the retries in hand (at most ``REVOKE_SETTLE`` seconds: those of a hanging app are still
        under way then, and are made again by the next owner), commit what finished before the partitions
        move and report what finished above the commit; forget their pauses."""
        if revoked:
            await self._settle(REVOKE_SETTLE)
        await super().on_partitions_revoked(revoked)
        await self._report_now(revoked)
        for tp in revoked:
            self._paused_until.pop(tp, None)
            self._finished.forget(tp)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        """Take the partitions paused, and read ahead in them (see :mod:`gravity_fanout.progress`)."""
        token = object()
        for tp in assigned:
            self._consumer.pause(tp)
            self._reading_ahead[tp] = token
        await super().on_partitions_assigned(assigned)
        task = asyncio.create_task(self._read_ahead(assigned, token))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read_ahead(self, tps: list[TopicPartition], token: object) -> None:
        """Mark the end of each partition, learn what former owners finished up to it, then resume it."""
        try:
            starts = {tp: self._windows.read_to(tp) for tp in tps if self._windows.owns(tp)}
            known = {tp: start for tp, start in starts.items() if start is not None}
            ends = await asyncio.gather(*(self._deliverer.finished(tp.partition) for tp in known))
            spans = {tp: (start, end) for (tp, start), end in zip(known.items(), ends, strict=True)}
            found = await read_finished(self._settings, self._group, spans, self._windows.owns)
            for tp, runs in found.items():
                self._finished.load(tp, runs)
        except Exception:  # work on them as read: at worst what former owners finished is made again
            log.exception("could not read ahead in %s", tps)
        finally:
            for tp in tps:
                if self._reading_ahead.get(tp) is token:
                    del self._reading_ahead[tp]
                    if tp not in self._paused_until and tp in self._consumer.assignment():
                        self._consumer.resume(tp)

    def _finished_work(self, tp: TopicPartition, offset: int) -> None:
        self._finished.add(tp, offset)

    def _after_commit(self) -> None:
        """About every ``REPORT_EVERY`` seconds, report (on a task of its own) what finished since."""
        now = asyncio.get_running_loop().time()
        if now - self._reported_at < REPORT_EVERY or (self._reporting and not self._reporting.done()):
            return
        self._reported_at = now
        report = self._finished.take(self._finished.pending(), self._windows.committed_to)
        if report:
            self._reporting = asyncio.create_task(self._report(report))

    async def _report_now(self, tps: list[TopicPartition]) -> None:
        """Report what finished in ``tps`` at once, waiting ``REPORT_TIMEOUT`` seconds at most."""
        report = self._finished.take(tps, self._windows.committed_to)
        if report:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._report(report), REPORT_TIMEOUT)

    async def _report(self, report: dict[TopicPartition, list[tuple[int, int]]]) -> None:
        """Write a ``RetriesFinished`` per partition (per ``REPORT_RUNS`` runs); a failure only costs the
        next owner those records again."""
        try:
            await asyncio.gather(
                *(
                    self._deliverer.finished(tp.partition, runs[i : i + REPORT_RUNS])
                    for tp, runs in report.items()
                    for i in range(0, len(runs), REPORT_RUNS)
                )
            )
        except Exception:
            log.warning("could not report the retries finished in %s", list(report), exc_info=True)

    async def _start_position(self, tp: TopicPartition) -> int:
        """The beginning, asked of the broker, not by seeking: the partition is not owned yet (see
        :meth:`Windows.assigned <gravity_fanout.windows.Windows.assigned>`)."""
        return int((await self._consumer.beginning_offsets([tp]))[tp])

    def _before_fetch(self) -> None:
        """Resume the partitions whose head is due."""
        now = asyncio.get_running_loop().time()
        for tp, until in list(self._paused_until.items()):
            if until <= now:
                del self._paused_until[tp]
                if tp in self._consumer.assignment() and tp not in self._reading_ahead:
                    self._consumer.resume(tp)

    async def _handle(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        now = self._deliverer.now()
        for record in records:
            if record_headers(record).get(RETRY_GROUP_HEADER, self._group) != self._group:
                self._skip(tp, record.offset)  # another deployment's retry: its own consumer's
                continue
            if self._finished.done(tp, record.offset):
                self._skip(tp, record.offset)  # a former owner of the partition finished it
                continue
            try:
                envelope = decode_record(record)
            except CodecError as exc:
                if self._windows.take(tp, record.offset):
                    await dead_letter(self._producer, record, exc)
                    self._windows.finish(tp, record.offset)
                continue
            event = envelope.event
            self._guards.seen(tp, record.timestamp)
            if isinstance(event, DeliveryGuardCleared):
                self._guards.clear(tp, event.guard_id)
                self._skip(tp, record.offset)
                continue
            app = self._apps.get(event.app_id) if isinstance(event, DeliveryRetry) else None
            if not isinstance(event, DeliveryRetry) or app is None or not app.deliverable:
                self._skip(tp, record.offset)  # nothing to do: the app is gone, disabled or has no URL
                continue
            if event.due_at > now:  # wait for it: read it again when due
                self._consumer.seek(tp, record.offset)
                self._consumer.pause(tp)
                wait = (event.due_at - now).total_seconds()
                self._paused_until[tp] = asyncio.get_running_loop().time() + min(wait, MAX_PAUSE)
                break
            work = partial(self._retry, event, envelope.headers)
            if event.guard_id is not None:
                if self._guards.cleared(tp, event.guard_id):
                    self._skip(tp, record.offset)  # its attempt ended and was recorded
                    continue
                work = partial(self._guarded, tp, event, envelope.headers, record.timestamp)
            if not await self._spawn(tp, record.offset, work):
                self._consumer.seek(tp, record.offset)  # stopping with the window full
                break

    async def _guarded(
        self, tp: TopicPartition, event: DeliveryRetry, headers: Headers, written_ms: int
    ) -> bool:
        """A due guard: void if a record voiding it is read before the partition is read past its horizon
        (its due time, or the guard grace after the guard was written if that is later: a guard written
        late, after a broker outage, is voided late too); otherwise its copy died with the attempt under
        way, and the attempt is made again. False, unfinished, when the partition moved or stopping came
        first (the next owner reads the guard again)."""
        guard_id = event.guard_id or ""
        horizon = max(event.due_at.timestamp() * 1000, written_ms + self._guard_grace_ms)
        while not self._guards.read_past(tp, horizon):
            if self._stopped.is_set() or not self._windows.owns(tp):
                return False
            if self._guards.mark_due(tp, horizon, time.time() * 1000):
                await self._deliverer.mark(event.app_id, event.tenant_id, tp.partition)
            await asyncio.sleep(GUARD_POLL)
        if self._guards.cleared(tp, guard_id):
            return True
        log.info(
            "attempt 1 of %s to app %s was under way on a copy that stopped; making it again",
            event.event.message_id,
            event.app_id,
        )
        return await self._retry(event, headers)

    def _skip(self, tp: TopicPartition, offset: int) -> None:
        if self._windows.take(tp, offset):
            self._windows.finish(tp, offset)

    async def _retry(self, event: DeliveryRetry, headers: Headers) -> bool:
        """One due retry; False when stopping before it could be recorded (read again after a restart).

        It counts in ``gravity_fanout_retries_due`` from when it was read due until its attempt starts
        (its app, tenant and overall slots taken) or it is dropped.
        """
        due = self._metrics.retries_due
        due.inc()
        waiting = True
        try:
            while True:
                app = self._apps.get(event.app_id)
                if app is None or not app.deliverable:
                    log.info(
                        "dropping retry %d of %s to app %s: it no longer receives",
                        event.attempt,
                        event.event.message_id,
                        event.app_id,
                    )
                    return True
                try:
                    async with (
                        self._app_gates.hold(app.app_id),
                        self._tenant_gates.hold(app.tenant_id),
                        self._concurrency,
                    ):
                        if waiting:
                            waiting = False
                            due.dec()
                        await self._deliverer.attempt(
                            app,
                            event.event,
                            attempt=event.attempt,
                            first_attempted_at=event.first_attempted_at,
                            headers=headers,
                        )
                except Exception:  # the attempt could not be recorded: try it again
                    log.exception("retry to app %s could not be recorded; trying again", app.app_id)
                    if not await self._pause_or_stop():
                        return False
                else:
                    return True
        finally:
            if waiting:
                due.dec()
