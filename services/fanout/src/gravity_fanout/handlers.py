"""One delivery attempt and everything that follows from it: the attempt record, the next retry,
disabling an endpoint that has failed for too long.

Every attempt is published on ``gravity.deliveries.v1``; a failed one that may be retried is appended to
``gravity.fanout.retry.v1`` before the attempt counts as finished, so a crash never loses it. The same
:class:`Deliverer` serves first attempts (lanes), retries and manual re-sends.

Each attempt runs in a client span, the child of the trace context its record carried, and the POST
carries that context on (``traceparent``); it is counted and timed in :class:`FanoutMetrics` and logged
once with its ids, status and outcome.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, ProducerClosed, RecordTooLargeError
from aiokafka.structs import RecordMetadata

from gravity_events import logs, topics, tracing
from gravity_events.codec import encode, encode_headers
from gravity_events.ids import utcnow
from gravity_events.models import (
    AppEndpointDisabled,
    DeliveryAttempt,
    DeliveryGuardCleared,
    DeliveryRetry,
    Event,
    RetriesFinished,
    SmsInbound,
)
from gravity_fanout.apps import App, AppTable
from gravity_fanout.clients import ClientPool
from gravity_fanout.schedule import RETRY_GROUP_HEADER, RetryPolicy, retry_partition
from gravity_service.metrics import FanoutMetrics
from gravity_webhooks import DeliveryResult

__all__ = [
    "RETRY_GROUP_HEADER",  # defined in gravity_fanout.schedule
    "Clock",
    "Deliverer",
    "RetryPolicy",  # defined in gravity_fanout.schedule
    "outcome",
]

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


RECORD_PAUSE_FIRST = 0.5
RECORD_PAUSE_MAX = 10.0
"""Seconds between sends of records the broker did not take (doubling from the first to the max)."""
UNTAKEN_LOG_SECONDS = 5.0
_NEVER_TAKEN = (MessageSizeTooLargeError, RecordTooLargeError, ProducerClosed)
"""Refusals that are final: the record is too large, or the producer is closing (a stop)."""


def outcome(result: DeliveryResult) -> str:
    """The ``outcome`` label of an attempt: success, http_error (any non-2xx answer), timeout, refused (the
    address is not allowed) or connect_error (no answer: connection or protocol failure)."""
    if result.ok:
        return "success"
    if result.status is not None:
        return "http_error"
    error = result.error or ""
    if error.startswith("timed out"):
        return "timeout"
    if error.startswith("refused"):
        return "refused"
    return "connect_error"


def _first_attempt(
    app: App,
    event: SmsInbound,
    *,
    due_at: datetime,
    first_attempted_at: datetime,
    guard_id: str | None = None,
) -> DeliveryRetry:
    """Attempt 1 of ``event`` to ``app`` on the retry queue: a hand-off, or a guard (``guard_id``)."""
    return DeliveryRetry(
        app_id=app.app_id,
        tenant_id=app.tenant_id,
        attempt=1,
        due_at=due_at,
        first_attempted_at=first_attempted_at,
        event=event,
        guard_id=guard_id,
    )


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
    metrics: FanoutMetrics = field(default_factory=FanoutMetrics)
    guard_delay: float = 35.0
    """Seconds from an attempt's start to its guard's due time (``Settings.guard_delay_seconds``)."""
    max_recording: int = 1000
    """Calls of :meth:`_record` writing at once (each an attempt's one to three records, or a deferral)."""
    _recording: asyncio.Semaphore = field(init=False, repr=False)
    _untaken: int = field(default=0, init=False, repr=False)
    _untaken_logged_at: float = field(default=float("-inf"), init=False, repr=False)

    def __post_init__(self) -> None:
        self._recording = asyncio.Semaphore(self.max_recording)

    @property
    def guard_partition(self) -> int:
        """The retry partition of guards and the records voiding them: the bucket of their delay, so a
        guard waits among retries of the same order and never in front of the hand-offs due now. Both on
        one partition: the copy that reads a guard has read whether it was voided (see
        :mod:`gravity_fanout.retries`)."""
        return retry_partition(self.guard_delay, self.retry_partitions)

    async def attempt(
        self,
        app: App,
        event: SmsInbound,
        *,
        attempt: int,
        first_attempted_at: datetime | None = None,
        headers: tracing.Headers = (),
        posted: Callable[[], None] | None = None,
    ) -> DeliveryResult:
        """POST ``event`` to ``app``, record the attempt, schedule the next one if it failed.

        ``headers`` are those of the record the attempt comes from: their trace context is the parent of
        the attempt's span and travels on the POST and on the retry record. ``posted`` is called when the
        POST has ended, before its outcome is recorded.
        """
        started = self.now()
        first = first_attempted_at or started
        result = await self._post(app, event, started, headers)
        if posted is not None:
            posted()
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
                partition = retry_partition(delay, self.retry_partitions)
                outgoing.append(self._retry_record(retry, partition, headers))
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
        if next_at is not None:
            self.metrics.retries_scheduled.inc()
        if disabled is not None:
            self.metrics.labels(self.metrics.apps_disabled, tenant_id=app.tenant_id, app_id=app.app_id).inc()
        return result

    async def _post(
        self, app: App, event: SmsInbound, started: datetime, headers: tracing.Headers
    ) -> DeliveryResult:
        """The POST itself, in its span, counted, timed and logged."""
        metrics = self.metrics
        metrics.in_flight.inc()
        try:
            with tracing.span("webhook attempt", parent=headers, kind=tracing.SpanKind.CLIENT) as span:
                result = await self.clients.get(app.app_id).deliver(
                    app.webhook_url or "",
                    encode(event),
                    message_id=event.message_id,
                    secrets=app.live_secrets(started),
                    extra_headers=tracing.http_headers(),
                )
                if result.status is not None:
                    span.set_attribute("http.response.status_code", result.status)
                trace_id = tracing.current_trace_id()  # the line below is logged after the span ends
        finally:
            metrics.in_flight.dec()
        kind = outcome(result)
        metrics.attempt_seconds.observe(result.duration_ms / 1000)
        metrics.labels(metrics.attempts, outcome=kind, tenant_id=app.tenant_id, app_id=app.app_id).inc()
        if result.ok:
            lag = (self.now() - event.timestamp).total_seconds()
            metrics.labels(metrics.delivery_lag_seconds, tenant_id=app.tenant_id, app_id=app.app_id).observe(
                max(lag, 0.0)
            )
        log.info(
            "webhook attempt: %s",
            kind,
            extra=logs.ids(
                tenant_id=app.tenant_id,
                message_id=event.message_id,
                app_id=app.app_id,
                trace_id=trace_id,
                status=result.status,
                outcome=kind,
            ),
        )
        return result

    async def defer(self, app: App, event: SmsInbound, headers: tracing.Headers = ()) -> None:
        """Hand a first attempt to the retry queue as attempt 1, due now (the app's lane is full, the
        attempt waited out the first-attempt window, or the tenant holds its share of the slots)."""
        now = self.now()
        retry = _first_attempt(app, event, due_at=now, first_attempted_at=now)
        await self._record([self._retry_record(retry, retry_partition(0.0, self.retry_partitions), headers)])

    async def guard(
        self,
        app: App,
        event: SmsInbound,
        *,
        guard_id: str,
        started: datetime,
        headers: tracing.Headers = (),
    ) -> None:
        """Record that attempt 1 to ``app``, started at ``started``, is under way here, so that its message
        can be committed: if no :meth:`clear_guard` follows (this copy died first), the retry queue makes
        the attempt again ``guard_delay`` seconds after it started, when it has surely ended."""
        due_at = started + timedelta(seconds=self.guard_delay)
        retry = _first_attempt(app, event, due_at=due_at, first_attempted_at=started, guard_id=guard_id)
        await self._record([self._retry_record(retry, self.guard_partition, headers)])

    async def clear_guard(self, app: App, guard_id: str) -> None:
        """The guarded attempt ended and its outcome is recorded: void its guard (same partition)."""
        await self._void(app.app_id, app.tenant_id, guard_id, self.guard_partition)

    async def mark(self, app_id: str, tenant_id: str, partition: int) -> None:
        """Write a mark to ``partition`` of the retry queue: a voiding record of no guard, read to know the
        partition was read up to now (see :class:`~gravity_fanout.retries.Guards`)."""
        await self._void(app_id, tenant_id, "grd_mark_" + secrets.token_hex(8), partition)

    async def _void(self, app_id: str, tenant_id: str, guard_id: str, partition: int) -> None:
        """Write the record voiding ``guard_id`` to ``partition`` of the retry queue."""
        cleared = DeliveryGuardCleared(app_id=app_id, tenant_id=tenant_id, guard_id=guard_id)
        extra = ((RETRY_GROUP_HEADER, self.group.encode()),)
        await self._record([_Outgoing(topics.FANOUT_RETRY, app_id, cleared, partition, extra)])

    async def finished(self, partition: int, offsets: Sequence[tuple[int, int]] = ()) -> int:
        """Write a :class:`RetriesFinished` of ``offsets`` to ``partition`` of the retry queue (a mark when
        empty, see :class:`~gravity_fanout.retries.Finished`); return the offset it was written at."""
        record = RetriesFinished(partition=partition, offsets=tuple(offsets))
        extra = ((RETRY_GROUP_HEADER, self.group.encode()),)
        [written] = await self._record([_Outgoing(topics.FANOUT_RETRY, self.group, record, partition, extra)])
        return int(written.offset)

    def _retry_record(self, retry: DeliveryRetry, partition: int, headers: tracing.Headers) -> _Outgoing:
        """The retry record: its deployment, and the trace context of the record it comes from."""
        extra = ((RETRY_GROUP_HEADER, self.group.encode()), *tracing.record_trace_headers(headers))
        return _Outgoing(topics.FANOUT_RETRY, retry.app_id, retry, partition, extra)

    async def _record(self, outgoing: Sequence[_Outgoing]) -> list[RecordMetadata]:
        """Write ``outgoing`` in order and wait until the broker has every record (return where each was
        written); send again only what it did not take, after a pause that grows to ``RECORD_PAUSE_MAX``
        seconds, for as long as it takes (a stop cancels). The POST is never made again for a record the
        broker was slow to take: through a broker restart, that was a duplicate delivery per timed-out
        record.

        At most ``max_recording`` calls write at once: more would only lengthen the producer's queue until
        its records expire, and expired records sent again lengthen it further.
        """
        pause = RECORD_PAUSE_FIRST
        written: dict[int, RecordMetadata] = {}
        pending = list(enumerate(outgoing))
        async with self._recording:
            while True:
                futures: list[asyncio.Future[RecordMetadata]] = []
                failed: list[tuple[tuple[int, _Outgoing], BaseException]] = []
                for i, (_, o) in enumerate(pending):
                    try:
                        futures.append(await self._send(o))
                    except KafkaError as exc:  # not queued: it and what follows go again, the queued do not
                        failed = [(rest, exc) for rest in pending[i:]]
                        break
                outcomes = await asyncio.gather(*futures, return_exceptions=True)
                for p, r in zip(pending, outcomes, strict=False):
                    if isinstance(r, BaseException):
                        failed.append((p, r))
                    else:
                        written[p[0]] = r
                if not failed:
                    return [written[i] for i in range(len(outgoing))]
                for _, error in failed:
                    if isinstance(error, _NEVER_TAKEN):  # sending it again cannot help
                        raise error
                self._note_untaken(len(failed), failed[0][1])
                await asyncio.sleep(pause)
                pause = min(pause * 2, RECORD_PAUSE_MAX)
                pending = sorted((p for p, _ in failed), key=lambda p: p[0])

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

    async def _send(self, o: _Outgoing) -> asyncio.Future[RecordMetadata]:
        future: asyncio.Future[RecordMetadata] = await self.producer.send(
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
