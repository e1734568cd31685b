"""What fanout knows and does: the apps table (from the change stream), the retry schedule, and one
delivery attempt with everything that follows from it (attempt record, next retry, disabling).

Apps arrive only from ``gravity.registry.apps.v1``; signing secrets travel there encrypted and are
decrypted here with ``GRAVITY_SECRET_KEY``. Every attempt is published on ``gravity.deliveries.v1``;
a failed one that may be retried is appended to ``gravity.fanout.retry.v1`` before the attempt counts
as finished, so a crash never loses it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, ProducerClosed, RecordTooLargeError

from gravity_events import topics
from gravity_events.codec import encode, encode_headers
from gravity_events.ids import utcnow
from gravity_events.kafka import Envelope
from gravity_events.models import (
    AppDeleted,
    AppEndpointDisabled,
    AppUpserted,
    DeliveryAttempt,
    DeliveryRetry,
    Event,
    SmsInbound,
)
from gravity_webhooks import DecryptionError, DeliveryClient, DeliveryResult, SecretBox

__all__ = [
    "RETRY_BUCKETS",
    "RETRY_GROUP_HEADER",
    "App",
    "AppTable",
    "ClientPool",
    "Clock",
    "Deliverer",
    "RetryPolicy",
    "retry_partition",
]

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


@dataclass
class App:
    """One app's delivery configuration, secrets decrypted."""

    app_id: str
    tenant_id: str
    webhook_url: str | None
    disabled: bool
    secrets: list[tuple[str, datetime | None]]
    updated_at: datetime
    failing_since: datetime | None = None

    def live_secrets(self, now: datetime) -> list[str]:
        """Secrets to sign with now (the previous one only until its rotation window ends)."""
        return [s for s, expires in self.secrets if expires is None or expires > now]

    @property
    def deliverable(self) -> bool:
        """Has a URL, is enabled, and has a secret to sign with."""
        return bool(self.webhook_url) and not self.disabled and bool(self.secrets)


@dataclass
class AppTable:
    """appId → App and tenantId → its apps, kept current by the apps change stream."""

    box: SecretBox
    on_removed: Callable[[str], None] = lambda app_id: None
    _apps: dict[str, App] = field(default_factory=dict)
    _by_tenant: dict[str, dict[str, App]] = field(default_factory=dict)

    def apply(self, envelope: Envelope) -> None:
        """Apply one change record (last write wins, as on the compacted topic)."""
        event = envelope.event
        if isinstance(event, AppUpserted):
            self._upsert(event)
        elif isinstance(event, AppDeleted):
            self._remove(event.app_id)

    def _upsert(self, event: AppUpserted) -> None:
        try:
            secrets = [(self.box.decrypt(s.ciphertext), s.expires_at) for s in event.signing_secrets]
        except DecryptionError:
            log.error("app %s: its signing secret cannot be decrypted with GRAVITY_SECRET_KEY", event.app_id)
            secrets = []
        old = self._apps.get(event.app_id)
        app = App(
            app_id=event.app_id,
            tenant_id=event.tenant_id,
            webhook_url=event.webhook_url,
            disabled=event.disabled,
            secrets=secrets,
            updated_at=event.updated_at,
            failing_since=old.failing_since if old is not None and not event.disabled else None,
        )
        if old is not None and old.disabled and not event.disabled:
            app.failing_since = None  # re-enabled: the failure clock starts again
        self._apps[app.app_id] = app
        self._by_tenant.setdefault(app.tenant_id, {})[app.app_id] = app
        if not app.deliverable:
            self.on_removed(app.app_id)

    def _remove(self, app_id: str) -> None:
        app = self._apps.pop(app_id, None)
        if app is not None:
            self._by_tenant.get(app.tenant_id, {}).pop(app_id, None)
        self.on_removed(app_id)

    def get(self, app_id: str) -> App | None:
        """The app, if it exists."""
        return self._apps.get(app_id)

    def targets(self, tenant_id: str) -> list[App]:
        """The tenant's apps that receive deliveries now."""
        return [a for a in self._by_tenant.get(tenant_id, {}).values() if a.deliverable]

    def __len__(self) -> int:
        return len(self._apps)


RETRY_GROUP_HEADER = "gravity-fanout-group"
"""Record header naming the deployment (consumer group) that scheduled a retry. Retries belong to the
deployment that scheduled them: a second deployment on the same cluster (staging, a renamed group, a
test) reads the same topic and must neither redo them nor disturb their timing."""

RETRY_BUCKETS = (10.0, 60.0, 300.0, 1200.0, 3600.0, 14400.0, 28800.0)
"""Upper bounds (seconds) of the delay buckets; bucket i is partition i of the retry topic."""


def retry_partition(delay: float, partitions: int) -> int:
    """The retry-topic partition for a retry due in ``delay`` seconds.

    Records of one partition have delays of the same order, so the partition's head is (nearly) always
    the next one due, and a long ``Retry-After`` never holds up short retries. A retry may therefore
    run late by at most its bucket's width (e.g. up to 50 s for delays between 10 s and 60 s).
    """
    bucket = next((i for i, bound in enumerate(RETRY_BUCKETS) if delay < bound), len(RETRY_BUCKETS))
    return min(bucket, partitions - 1)


@dataclass(frozen=True)
class RetryPolicy:
    """When the next attempt happens, and whether there is one."""

    schedule: Sequence[float]
    jitter: float = 0.1
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, result: DeliveryResult) -> float | None:
        """Seconds until attempt ``attempt + 1`` after attempt ``attempt`` failed; None: give up.

        ``Retry-After`` on 429/503 is honoured (never shorter than it). Any other 4xx except 408 ends
        retries: the endpoint refused this payload and the same bytes would be refused again.
        """
        status = result.status
        if status is not None and 400 <= status < 500 and status not in (408, 429):
            return None
        if attempt > len(self.schedule):
            return None
        base = self.schedule[attempt - 1]
        delay = base * (1 + self.rng.uniform(-self.jitter, self.jitter))
        if status in (429, 503) and result.retry_after is not None:
            delay = max(delay, result.retry_after)
        return delay


class ClientPool:
    """One :class:`DeliveryClient` (one connection pool) per app.

    Measured here: a single httpx pool shared by 100 concurrent deliveries managed 79 requests/s, one pool
    per endpoint 530/s on the same machine (httpx's pool degrades with many waiters, encode/httpx#3215).
    Per-app pools also keep one endpoint's connections from starving another's.
    """

    def __init__(self, make: Callable[[], DeliveryClient]) -> None:
        self._make = make
        self._clients: dict[str, DeliveryClient] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def get(self, app_id: str) -> DeliveryClient:
        """The app's client."""
        client = self._clients.get(app_id)
        if client is None:
            client = self._clients[app_id] = self._make()
        return client

    def drop(self, app_id: str) -> None:
        """Close the app's connections (it was removed, disabled or lost its URL)."""
        client = self._clients.pop(app_id, None)
        if client is not None:
            task = asyncio.get_running_loop().create_task(client.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        """Close every client."""
        clients, self._clients = list(self._clients.values()), {}
        await asyncio.gather(*(c.aclose() for c in clients), *self._closing, return_exceptions=True)


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
