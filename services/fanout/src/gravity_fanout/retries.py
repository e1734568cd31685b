"""The durable retry queue's consumer: due retries from ``gravity.fanout.retry.v1``.

A record not yet due pauses its partition (one partition per range of delays, so the head is always the
next due; see :func:`gravity_fanout.schedule.retry_partition`) until it is. Due retries run side by side
(per-app and overall limits) and commit like first attempts (see :mod:`gravity_fanout.windows`). Records
another deployment scheduled (another consumer group, see ``RETRY_GROUP_HEADER``) are skipped.

One tenant runs at most ``GRAVITY_FANOUT_TENANT_SHARE`` of the ``retry_concurrency`` attempts at once, so
a tenant with a flood of retries (or hundreds of failing apps) always leaves slots to the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from functools import partial

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from gravity_events import topics
from gravity_events.codec import CodecError
from gravity_events.kafka import dead_letter, decode_record, record_headers
from gravity_events.models import DeliveryRetry
from gravity_events.tracing import Headers
from gravity_fanout.apps import AppTable
from gravity_fanout.handlers import Deliverer
from gravity_fanout.schedule import RETRY_GROUP_HEADER
from gravity_fanout.settings import Settings
from gravity_fanout.windows import WindowedConsumer

__all__ = ["Gates", "RetryConsumer"]

log = logging.getLogger(__name__)

MAX_PAUSE = 60.0
"""Seconds a partition stays paused at most before its head is read again."""


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

    async def close(self) -> None:
        """Abandon the attempts in hand (not committed: read again after a restart), leave the group."""
        for task in self._tasks:
            task.cancel()
        await super().close()

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Commit what finished before the partitions move; forget their pauses."""
        await super().on_partitions_revoked(revoked)
        for tp in revoked:
            self._paused_until.pop(tp, None)

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
                if tp in self._consumer.assignment():
                    self._consumer.resume(tp)

    async def _handle(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        now = self._deliverer.now()
        for record in records:
            if record_headers(record).get(RETRY_GROUP_HEADER, self._group) != self._group:
                self._skip(tp, record.offset)  # another deployment's retry: its own consumer's
                continue
            try:
                envelope = decode_record(record)
            except CodecError as exc:
                if self._windows.take(tp, record.offset):
                    await dead_letter(self._producer, record, exc)
                    self._windows.finish(tp, record.offset)
                continue
            event = envelope.event
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
            if not await self._spawn(tp, record.offset, partial(self._retry, event, envelope.headers)):
                self._consumer.seek(tp, record.offset)  # stopping with the window full
                break

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
