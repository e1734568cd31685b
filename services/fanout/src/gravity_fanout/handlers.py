"""One delivery attempt and everything that follows from it: the attempt record, the next retry,
disabling an endpoint that has failed for too long.

Every attempt is published on ``gravity.deliveries.v1``; a failed one that may be retried is appended to
``gravity.fanout.retry.v1`` before the attempt counts as finished, so a crash never loses it. The same
:class:`Deliverer` serves first attempts (lanes), retries and manual re-sends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, ProducerClosed, RecordTooLargeError

from gravity_events import topics
from gravity_events.codec import encode, encode_headers
from gravity_events.ids import utcnow
from gravity_events.models import AppEndpointDisabled, DeliveryAttempt, DeliveryRetry, Event, SmsInbound
from gravity_fanout.apps import App, AppTable
from gravity_fanout.clients import ClientPool
from gravity_fanout.schedule import RETRY_GROUP_HEADER, RetryPolicy, retry_partition
from gravity_webhooks import DeliveryResult

__all__ = [
    "RETRY_GROUP_HEADER",  # defined in gravity_fanout.schedule
    "Clock",
    "Deliverer",
    "RetryPolicy",  # defined in gravity_fanout.schedule
]

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


RECORD_PAUSE_FIRST = 0.5
RECORD_PAUSE_MAX = 10.0
"""Seconds between sends of records the broker did not take (doubling from the first to the max)."""
UNTAKEN_LOG_SECONDS = 5.0
_NEVER_TAKEN = (MessageSizeTooLargeError, RecordTooLargeError, ProducerClosed)
"""Refusals that are final: the record is too large, or the producer is closing (a stop)."""


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """One record an attempt writes: topic, key, event, and where it must go."""

    topic: str
    key: str
    event: Event
    partition: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class Deliverer:
    """One attempt and its consequences. Shared by first attempts, retries and manual requests."""

    clients: ClientPool
    producer: AIOKafkaProducer
    apps: AppTable
    policy: RetryPolicy
    disable_after: timedelta
    retry_partitions: int
    group: str = "gravity-fanout"
    """The deployment's consumer group, stamped on its retry records (:data:`RETRY_GROUP_HEADER`)."""
    now: Clock = utcnow
    max_recording: int = 1000
    """Calls of :meth:`_record` writing at once (each an attempt's one to three records, or a deferral)."""
    _recording: asyncio.Semaphore = field(init=False, repr=False)
    _untaken: int = field(default=0, init=False, repr=False)
    _untaken_logged_at: float = field(default=float("-inf"), init=False, repr=False)

    def __post_init__(self) -> None:
        self._recording = asyncio.Semaphore(self.max_recording)

    async def attempt(
        self, app: App, event: SmsInbound, *, attempt: int, first_attempted_at: datetime | None = None
    ) -> DeliveryResult:
        """POST ``event`` to ``app``, record the attempt, schedule the next one if it failed."""
        started = self.now()
        first = first_attempted_at or started
        url = app.webhook_url or ""
        result = await self.clients.get(app.app_id).deliver(
            url, encode(event), message_id=event.message_id, secrets=app.live_secrets(started)
        )
        next_at: datetime | None = None
        outgoing: list[_Outgoing] = []
        if not result.ok:
            delay = self.policy.delay(attempt, result)
            if delay is not None:
                next_at = self.now() + timedelta(seconds=delay)
                retry = DeliveryRetry(
                    app_id=app.app_id,
                    tenant_id=app.tenant_id,
                    attempt=attempt + 1,
                    due_at=next_at,
                    first_attempted_at=first,
                    event=event,
                )
                outgoing.append(self._retry_record(retry, retry_partition(delay, self.retry_partitions)))
        record = DeliveryAttempt(
            app_id=app.app_id,
            tenant_id=app.tenant_id,
            message_id=event.message_id,
            attempt=attempt,
            succeeded=result.ok,
            response_code=result.status,
            duration_ms=result.duration_ms,
            error=result.error,
            attempted_at=started,
            next_attempt_at=next_at,
        )
        outgoing.append(_Outgoing(topics.DELIVERIES, app.app_id, record))
        disabled = self._track_health(app, result.ok, first)
        if disabled is not None:
            outgoing.append(_Outgoing(topics.DELIVERIES, app.app_id, disabled))
        await self._record(outgoing)  # durable before the attempt counts as finished
        return result

    async def defer(self, app: App, event: SmsInbound) -> None:
        """Hand a first attempt to the retry queue, due now (the app's lane is full)."""
        now = self.now()
        retry = DeliveryRetry(
            app_id=app.app_id,
            tenant_id=app.tenant_id,
            attempt=1,
            due_at=now,
            first_attempted_at=now,
            event=event,
        )
        await self._record([self._retry_record(retry, 0)])

    def _retry_record(self, retry: DeliveryRetry, partition: int) -> _Outgoing:
        return _Outgoing(
            topics.FANOUT_RETRY, retry.app_id, retry, partition, ((RETRY_GROUP_HEADER, self.group.encode()),)
        )

    async def _record(self, outgoing: Sequence[_Outgoing]) -> None:
        """Write ``outgoing`` in order and wait until the broker has every record; send again only what it
        did not take, after a pause that grows to ``RECORD_PAUSE_MAX`` seconds, for as long as it takes (a
        stop cancels). The POST is never made again for a record the broker was slow to take: through a
        broker restart, that was a duplicate delivery per timed-out record.

        At most ``max_recording`` calls write at once: more would only lengthen the producer's queue until
        its records expire, and expired records sent again lengthen it further.
        """
        pause = RECORD_PAUSE_FIRST
        pending = list(outgoing)
        async with self._recording:
            while True:
                futures: list[asyncio.Future[object]] = []
                failed: list[tuple[_Outgoing, BaseException]] = []
                for i, o in enumerate(pending):
                    try:
                        futures.append(await self._send(o))
                    except KafkaError as exc:  # not queued: it and what follows go again, the queued do not
                        failed = [(rest, exc) for rest in pending[i:]]
                        break
                outcomes = await asyncio.gather(*futures, return_exceptions=True)
                failed = [
                    (o, r) for o, r in zip(pending, outcomes, strict=False) if isinstance(r, BaseException)
                ] + failed
                if not failed:
                    return
                for _, error in failed:
                    if isinstance(error, _NEVER_TAKEN):  # sending it again cannot help
                        raise error
                self._note_untaken(len(failed), failed[0][1])
                await asyncio.sleep(pause)
                pause = min(pause * 2, RECORD_PAUSE_MAX)
                pending = [o for o, _ in failed]

    def _note_untaken(self, count: int, error: BaseException) -> None:
        """One warning per ``UNTAKEN_LOG_SECONDS`` at most, with the count since the last (an overloaded
        producer refuses thousands of records a second)."""
        self._untaken += count
        now = time.monotonic()
        if now - self._untaken_logged_at >= UNTAKEN_LOG_SECONDS:
            log.warning(
                "the broker did not take %d attempt record(s) since the last report (last: %r); sending them"
                " again, not the webhooks",
                self._untaken,
                error,
            )
            self._untaken, self._untaken_logged_at = 0, now

    async def _send(self, o: _Outgoing) -> asyncio.Future[object]:
        future: asyncio.Future[object] = await self.producer.send(
            o.topic,
            encode(o.event),
            key=o.key.encode(),
            headers=[*encode_headers(o.event), *o.headers],
            partition=o.partition,
        )
        return future

    def _track_health(self, app: App, ok: bool, first: datetime) -> AppEndpointDisabled | None:
        """Continuous failure for ``disable_after`` disables the app (Svix does this after 5 days)."""
        if ok:
            app.failing_since = None
            return None
        since = min(app.failing_since or first, first)
        app.failing_since = since
        now = self.now()
        if app.disabled or now - since < self.disable_after:
            return None
        app.disabled = True
        log.warning("app %s disabled: its endpoint has failed since %s", app.app_id, since.isoformat())
        self.apps.on_removed(app.app_id)
        return AppEndpointDisabled(
            app_id=app.app_id, tenant_id=app.tenant_id, failing_since=since, disabled_at=now
        )
