"""Fanout's three consumers and the per-app lanes that keep apps independent.

- :class:`InboundConsumer` reads ``sms_inbound`` in the consumer group. Each message becomes one job per
  target app, put on that app's :class:`Lane`; the consumer goes on reading. An offset is committed only
  when every job of its message and of every earlier message of the partition has finished its first
  attempt (success, or failure recorded and its retry queued): at-least-once. A full lane (a slow or dead
  endpoint) does not block: the job is handed to the retry queue, due now. ``max_in_flight`` bounds the
  messages not yet finished; beyond it the consumer stops fetching. What a copy read is remembered per
  partition across rebalances (:class:`_Window`): partitions that come back resume where this copy stopped
  reading, so a rebalance does not re-send the unfinished suffix to every app.
- :class:`RetryConsumer` reads ``gravity.fanout.retry.v1`` in its own group. A record not yet due pauses
  its partition (one partition per range of delays, so the head is always the next due) until it is.
  Due retries run side by side (per-app and overall limits) and commit like first attempts.
  Records another deployment scheduled (another consumer group, see ``RETRY_GROUP_HEADER``) are skipped.
- :func:`make_request_consumer`: manual re-sends asked through the registry API.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from gravity_events import topics
from gravity_events.codec import CodecError
from gravity_events.kafka import (
    Envelope,
    EventConsumer,
    dead_letter,
    decode_record,
    offsets_at,
    record_headers,
)
from gravity_events.models import DeliveryRequested, DeliveryRetry, SmsInbound
from gravity_fanout.handlers import RETRY_GROUP_HEADER, App, AppTable, Deliverer
from gravity_fanout.settings import Settings

__all__ = ["InboundConsumer", "Lane", "Lanes", "RetryConsumer", "make_request_consumer"]

log = logging.getLogger(__name__)


@dataclass
class _Job:
    app: App
    event: SmsInbound
    done: asyncio.Future[None]


class Lane:
    """One app's queue and workers: its slowness stays its own."""

    def __init__(self, deliverer: Deliverer, *, size: int, workers: int) -> None:
        self._deliverer = deliverer
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=size)
        self._workers = [asyncio.create_task(self._work()) for _ in range(workers)]

    async def submit(self, app: App, event: SmsInbound) -> None:
        """Return when the first attempt finished, or at once after deferring it if the lane is full."""
        job = _Job(app, event, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            await self._deliverer.defer(app, event)
            return
        await job.done

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                await self._deliverer.attempt(job.app, job.event, attempt=1)
                job.done.set_result(None)
            except asyncio.CancelledError:  # closed mid-attempt: the message is not committed
                job.done.set_exception(RuntimeError("lane closed"))
                raise
            except Exception as exc:  # the attempt could not be recorded: the message must be re-read
                log.exception("delivery to app %s could not be recorded", job.app.app_id)
                job.done.set_exception(exc)

    def close(self) -> None:
        """Stop the workers; queued jobs fail (their messages are not committed and come back)."""
        for task in self._workers:
            task.cancel()
        while not self._queue.empty():
            job = self._queue.get_nowait()
            job.done.set_exception(RuntimeError("lane closed"))


class Lanes:
    """A lane per app, created on first use, closed when the app stops receiving."""

    def __init__(self, deliverer: Deliverer, settings: Settings) -> None:
        self._deliverer = deliverer
        self._settings = settings
        self._lanes: dict[str, Lane] = {}
        self._closed = False

    def lane(self, app_id: str) -> Lane:
        """The app's lane (RuntimeError once closed: the job's message stays uncommitted)."""
        if self._closed:
            raise RuntimeError("lanes closed")
        lane = self._lanes.get(app_id)
        if lane is None:
            lane = self._lanes[app_id] = Lane(
                self._deliverer,
                size=self._settings.per_app_queue,
                workers=self._settings.per_app_concurrency,
            )
        return lane

    def drop(self, app_id: str) -> None:
        """The app was removed, lost its URL or was disabled."""
        lane = self._lanes.pop(app_id, None)
        if lane is not None:
            lane.close()

    def close(self) -> None:
        """Close every lane."""
        self._closed = True
        for app_id in list(self._lanes):
            self.drop(app_id)


@dataclass
class _Window:
    """One ``sms_inbound`` partition as this copy read it: offsets in order, True once finished.

    Kept when a rebalance takes the partition away (this copy's tasks go on delivering what they hold), so
    a rebalance that gives it back does not dispatch those messages a second time: reading resumes at
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


class _Windows:
    """A consumer's windows and the partitions it owns: what to read, what to skip, what to commit.

    ``start`` gives the first offset of a partition the group never committed (each consumer has its own
    idea of where a brand-new group starts).
    """

    def __init__(self, consumer: AIOKafkaConsumer, start: Callable[[TopicPartition], Awaitable[int]]) -> None:
        self._consumer = consumer
        self._start = start
        self._windows: dict[TopicPartition, _Window] = {}
        self._owned: set[TopicPartition] = set()

    def take(self, tp: TopicPartition, offset: int) -> bool:
        """Register a record to work on; False if the partition is not owned or this copy has it already."""
        window = self._windows.get(tp)
        return tp in self._owned and window is not None and window.add(offset)

    def finish(self, tp: TopicPartition, offset: int) -> None:
        """The work of a taken record is done."""
        window = self._windows.get(tp)
        if window is not None and offset in window.offsets:
            window.offsets[offset] = True

    async def revoked(self, revoked: list[TopicPartition]) -> None:
        """Commit what finished before the partitions move; keep their windows (see :class:`_Window`)."""
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
                window = _Window(read_to=committed, committed_to=committed)
            else:
                window = _Window(read_to=await self._start(tp))
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


class InboundConsumer(ConsumerRebalanceListener):  # type: ignore[misc]
    """``sms_inbound`` → a job per target app; commit the finished prefix of each partition."""

    def __init__(self, settings: Settings, apps: AppTable, lanes: Lanes, producer: AIOKafkaProducer) -> None:
        self._apps = apps
        self._lanes = lanes
        self._producer = producer
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._start_ms = int(time.time() * 1000)  # a new group starts here (see assignment)
        self.assigned = asyncio.Event()
        """Set once the group gave this copy its partitions and their positions are fixed."""
        self._stopped = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=settings.consumer_group,
            client_id="gravity-fanout",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=min(1_000, settings.kafka_session_timeout_ms // 3),
            max_poll_interval_ms=300_000,
        )
        self._windows = _Windows(self._consumer, self._start_position)

    async def start(self) -> None:
        """Connect and join the group."""
        await self._consumer.start()
        self._consumer.subscribe([topics.SMS_INBOUND], listener=self)

    def stop(self) -> None:
        """Stop reading; the loop commits what finished and returns."""
        self._stopped.set()

    async def close(self) -> None:
        """Wait for the messages in hand (their lanes are closed: they end at once), leave the group."""
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._consumer.stop()

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Commit what finished before the partitions move; keep their windows (see :class:`_Window`)."""
        await self._windows.revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        """Resume where this copy stopped reading, else at the committed offset, else at "now"."""
        await self._windows.assigned(assigned)
        self.assigned.set()

    async def _start_position(self, tp: TopicPartition) -> int:
        """A brand-new group (the first deployment) must not send every stored message to today's apps: it
        starts where the topic was when this process started (``offsets_at``)."""
        return (await offsets_at(self._consumer, [tp], self._start_ms))[tp]

    async def run(self) -> None:
        """Read, dispatch, commit, until stopped."""
        while not self._stopped.is_set():
            batch = await self._consumer.getmany(timeout_ms=100, max_records=500)
            for tp, records in batch.items():
                for record in records:
                    # backpressure: stop reading when too much is unfinished (but never block a stop)
                    if not await _slot_or_stop(self._slots, self._stopped):
                        break
                    if not self._windows.take(tp, record.offset):
                        self._slots.release()  # moved away meanwhile, or this copy has it already
                        continue
                    task = asyncio.create_task(self._dispatch(tp, record))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            await self._commit()
        await self._commit()

    async def _dispatch(self, tp: TopicPartition, record: ConsumerRecord) -> None:
        try:
            try:
                event = decode_record(record).event
            except CodecError as exc:
                await dead_letter(self._producer, record, exc)
                event = None
            if isinstance(event, SmsInbound) and not await self._deliver(event):
                return  # stopping with work undone: not committed, read again after the restart
            self._windows.finish(tp, record.offset)
        except Exception:
            log.exception(
                "message at %s/%s could not be dispatched; it will be read again", tp, record.offset
            )
        finally:
            self._slots.release()

    async def _deliver(self, event: SmsInbound) -> bool:
        """First attempts to every target app; a job that could not be recorded is tried again."""
        pending = self._apps.targets(event.tenant_id)
        while pending:
            outcomes = await asyncio.gather(
                *(self._submit(app, event) for app in pending), return_exceptions=True
            )
            pending = [
                app
                for app, outcome in zip(pending, outcomes, strict=True)
                if isinstance(outcome, Exception) and app in self._apps.targets(event.tenant_id)
            ]
            if pending:
                if self._stopped.is_set():
                    return False
                await asyncio.sleep(1.0)  # the broker refused the attempt record: back off, try again
        return True

    async def _submit(self, app: App, event: SmsInbound) -> None:
        await self._lanes.lane(app.app_id).submit(app, event)

    async def _commit(self) -> None:
        await self._windows.commit()


class RetryConsumer(ConsumerRebalanceListener):  # type: ignore[misc]
    """Due retries from the retry queue; a partition whose head is not due yet is paused until it is.

    Each due retry runs on its own task: at most ``per_app_concurrency`` attempts per app and
    ``retry_concurrency`` in all at once, while the consumer reads on, so a hanging endpoint's retries wait
    for that endpoint only, never another app's. Offsets are committed for the finished prefix of each
    partition (as for first attempts); ``max_in_flight`` bounds the retries read and not finished.
    """

    def __init__(
        self, settings: Settings, apps: AppTable, deliverer: Deliverer, producer: AIOKafkaProducer
    ) -> None:
        self._apps = apps
        self._deliverer = deliverer
        self._producer = producer
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._concurrency = asyncio.Semaphore(settings.retry_concurrency)
        self._per_app = settings.per_app_concurrency
        self._app_gates: dict[str, asyncio.Semaphore] = {}
        self._group = settings.consumer_group.encode()
        self._paused_until: dict[TopicPartition, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = asyncio.Event()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=settings.consumer_group + "-retry",
            client_id="gravity-fanout",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=min(1_000, settings.kafka_session_timeout_ms // 3),
        )
        self._windows = _Windows(self._consumer, self._earliest)

    async def start(self) -> None:
        """Connect and join the group."""
        await self._consumer.start()
        self._consumer.subscribe([topics.FANOUT_RETRY], listener=self)

    def stop(self) -> None:
        """Stop reading; the loop commits what finished and returns."""
        self._stopped.set()

    async def close(self) -> None:
        """Abandon the attempts in hand (not committed: read again after a restart), leave the group."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._consumer.stop()

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Commit what finished before the partitions move; keep their windows (see :class:`_Window`)."""
        await self._windows.revoked(revoked)
        for tp in revoked:
            self._paused_until.pop(tp, None)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        """Resume where this copy stopped reading, else at the committed offset, else at the beginning."""
        await self._windows.assigned(assigned)

    async def _earliest(self, tp: TopicPartition) -> int:
        """Asked of the broker, not by seeking: the partition is not owned yet (see ``_Windows.assigned``)."""
        return int((await self._consumer.beginning_offsets([tp]))[tp])

    async def run(self) -> None:
        """Deliver due retries until stopped."""
        loop = asyncio.get_running_loop()
        while not self._stopped.is_set():
            for tp, until in list(self._paused_until.items()):
                if until <= loop.time():
                    del self._paused_until[tp]
                    if tp in self._consumer.assignment():
                        self._consumer.resume(tp)
            batch = await self._consumer.getmany(timeout_ms=100, max_records=200)
            for tp, records in batch.items():
                await self._partition_batch(tp, records)
            await self._commit()
        await self._commit()

    async def _partition_batch(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        now = self._deliverer.now()
        for record in records:
            if record_headers(record).get(RETRY_GROUP_HEADER, self._group) != self._group:
                self._skip(tp, record.offset)  # another deployment's retry: its own consumer's
                continue
            try:
                event = decode_record(record).event
            except CodecError as exc:
                if self._windows.take(tp, record.offset):
                    await dead_letter(self._producer, record, exc)
                    self._windows.finish(tp, record.offset)
                continue
            app = self._apps.get(event.app_id) if isinstance(event, DeliveryRetry) else None
            if not isinstance(event, DeliveryRetry) or app is None or not app.deliverable:
                self._skip(tp, record.offset)  # nothing to do: the app is gone, disabled or has no URL
                continue
            if event.due_at > now:  # wait for it: read it again when due
                self._consumer.seek(tp, record.offset)
                self._consumer.pause(tp)
                wait = (event.due_at - now).total_seconds()
                self._paused_until[tp] = asyncio.get_running_loop().time() + min(wait, 60.0)
                break
            if not await _slot_or_stop(self._slots, self._stopped):  # stopping with the window full
                self._consumer.seek(tp, record.offset)
                break
            if not self._windows.take(tp, record.offset):
                self._slots.release()  # moved away meanwhile, or this copy has it already
                continue
            task = asyncio.create_task(self._retry(tp, record.offset, event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _skip(self, tp: TopicPartition, offset: int) -> None:
        if self._windows.take(tp, offset):
            self._windows.finish(tp, offset)

    async def _retry(self, tp: TopicPartition, offset: int, event: DeliveryRetry) -> None:
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
                    break
                gate = self._app_gates.setdefault(app.app_id, asyncio.Semaphore(self._per_app))
                try:
                    async with gate, self._concurrency:
                        await self._deliverer.attempt(
                            app,
                            event.event,
                            attempt=event.attempt,
                            first_attempted_at=event.first_attempted_at,
                        )
                    break
                except Exception:  # the attempt could not be recorded: try it again
                    log.exception("retry to app %s could not be recorded; trying again", app.app_id)
                    if self._stopped.is_set():
                        return
                    await asyncio.sleep(1.0)
            self._windows.finish(tp, offset)
        finally:
            self._slots.release()

    async def _commit(self) -> None:
        await self._windows.commit()


def make_request_consumer(
    settings: Settings, apps: AppTable, deliverer: Deliverer, producer: AIOKafkaProducer
) -> EventConsumer:
    """Manual re-sends (``POST …/deliveries/{messageId}/retry``): a fresh delivery, attempt 1."""

    async def handle(batch: list[Envelope]) -> None:
        jobs = []
        for envelope in batch:
            request = envelope.event
            if not isinstance(request, DeliveryRequested):
                continue
            app = apps.get(request.app_id)
            if app is None or not app.webhook_url or not app.secrets:
                log.info("manual delivery to app %s skipped: it has no webhookUrl", request.app_id)
                continue
            jobs.append(deliverer.attempt(app, request.event, attempt=1))
        await asyncio.gather(*jobs)

    return EventConsumer(
        settings,
        topics=[topics.DELIVERY_REQUESTS],
        group_id=settings.consumer_group + "-requests",
        handler=handle,
        producer=producer,
        client_id="gravity-fanout",
    )
