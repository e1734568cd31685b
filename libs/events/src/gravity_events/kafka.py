"""Small Kafka helpers so each service's loop is a few readable lines.

- :func:`ensure_topics`: the one idempotent bootstrap step (create missing topics, wait for metadata).
- :func:`make_producer` / :func:`publish`: ``acks="all"`` producer, keyed, self-describing records.
- :class:`EventConsumer`: consumer-group loop — ``getmany`` → decode → handler → commit. A record that
  does not decode is logged with topic/partition/offset, copied to the dead-letter topic and skipped;
  a handler failure re-reads the same batch after a back-off (nothing is committed past unprocessed
  records). ``run(until_idle=True)`` drains and returns, for tests.
- :class:`ChangeStreamReader`: replays compacted change topics from offset 0 into memory and keeps
  following them; ``ready`` is set once it has read everything there was (read until idle, because
  the embedded broker's end offsets are unreliable).
- :class:`ConsumerLag`: ``gravity_kafka_consumer_lag{group,topic,partition}`` of every tracked
  :class:`EventConsumer` and :class:`ChangeStreamReader`, computed at scrape time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CommitFailedError, KafkaError
from opentelemetry.context import Context
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gravity_events import topics as topic_names
from gravity_events.codec import CodecError, decode, encode, encode_headers
from gravity_events.models import Event
from gravity_events.settings import KafkaSettings
from gravity_events.topics import ALL_TOPICS, TopicSpec

__all__ = [
    "CONSUMER_LAG",
    "ChangeStreamReader",
    "ConsumerLag",
    "Envelope",
    "EventConsumer",
    "dead_letter",
    "decode_record",
    "ensure_topics",
    "make_producer",
    "offsets_at",
    "partition_lag",
    "publish",
    "record_headers",
]

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded record and where it came from."""

    topic: str
    partition: int
    offset: int
    key: str | None
    timestamp_ms: int
    headers: dict[str, bytes]
    event: Event


def record_headers(record: ConsumerRecord) -> dict[str, bytes]:
    """A record's headers as a dict (last value wins)."""
    return {k: bytes(v) for k, v in (record.headers or ())}


async def offsets_at(
    consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition], at_ms: int
) -> dict[TopicPartition, int]:
    """Where each partition is at ``at_ms``: its first record stamped at or after it, else its end.

    ``offsets_for_times`` answers "no record that recent" with no offset on Apache Kafka, but with offset 0
    and timestamp -1 on the embedded broker (Tansu 0.6), and aiokafka hands that on as a hit. Taken at its
    word it replays the whole partition, which on a large one takes minutes (``shared/infra-notes.md``).
    A hit counts only when it carries a real timestamp.

    The ends are asked for first: a partition with no hit had nothing stamped at or after ``at_ms`` when
    the second answer was given, so whatever was appended between the two answers is older and may be
    skipped. Asked the other way round, a record appended in between would be lost.
    """
    tps = list(partitions)
    ends = await consumer.end_offsets(tps)
    found = await consumer.offsets_for_times(dict.fromkeys(tps, at_ms))
    hits = {tp: hit.offset for tp in tps if (hit := found.get(tp)) is not None and hit.timestamp >= 0}
    return {tp: hits.get(tp, ends[tp]) for tp in tps}


async def ensure_topics(
    settings: KafkaSettings, specs: Sequence[TopicSpec] = ALL_TOPICS, *, timeout: float = 60.0
) -> None:
    """Create the topics that are missing and wait until every one is in the metadata.

    Safe to run concurrently from every service: "already exists" counts as success.
    """
    deadline = time.monotonic() + timeout
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers, client_id="gravity-bootstrap"
    )
    while True:
        try:
            await admin.start()
            break
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(
                        s.name,
                        num_partitions=s.partitions,
                        replication_factor=settings.kafka_replication_factor,
                        topic_configs=s.configs,
                    )
                    for s in missing
                ]
            )
            for name, code, *_ in getattr(response, "topic_errors", ()):
                if code not in (0, _TOPIC_ALREADY_EXISTS):
                    raise KafkaError(f"creating topic {name} failed with error code {code}")
        wanted = {s.name: s.partitions for s in specs}
        while True:
            described = await admin.describe_topics(list(wanted))
            ready = {
                d["topic"]
                for d in described
                if d.get("error_code", 0) == 0 and len(d.get("partitions", ())) >= 1
            }
            if ready >= set(wanted):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics not in metadata: {sorted(set(wanted) - ready)}")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


def make_producer(settings: KafkaSettings, *, client_id: str, linger_ms: int = 1) -> AIOKafkaProducer:
    """A producer that waits for every in-sync replica (``acks="all"``)."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        linger_ms=linger_ms,
        request_timeout_ms=10_000,
        retry_backoff_ms=100,
    )


async def publish(
    producer: AIOKafkaProducer,
    topic: str,
    event: Event,
    *,
    key: str,
    extra_headers: Sequence[tuple[str, bytes]] = (),
    context: Context | None = None,
) -> None:
    """Append ``event`` to ``topic`` and wait for the broker's acknowledgement.

    The record carries the trace context of ``context`` (default: the current one), if any.
    """
    headers = [*encode_headers(event, context), *extra_headers]
    await producer.send_and_wait(topic, encode(event), key=key.encode(), headers=headers)


async def dead_letter(
    producer: AIOKafkaProducer,
    record: ConsumerRecord,
    error: Exception,
) -> None:
    """Copy an undecodable record to the dead-letter topic, its origin in headers."""
    log.error(
        "dead-lettering record topic=%s partition=%s offset=%s: %s",
        record.topic,
        record.partition,
        record.offset,
        str(error)[:500],
    )
    headers = [
        *list(record.headers or ()),
        ("dlq-origin-topic", record.topic.encode()),
        ("dlq-origin-partition", str(record.partition).encode()),
        ("dlq-origin-offset", str(record.offset).encode()),
        ("dlq-error", str(error)[:1000].encode()),
    ]
    await producer.send_and_wait(topic_names.DEAD_LETTER, record.value, key=record.key, headers=headers)


def _decode_record(
    record: ConsumerRecord,
) -> Envelope:
    headers = record_headers(record)
    event = decode(record.topic, record.value, list(headers.items()))
    key = record.key.decode(errors="replace") if record.key is not None else None
    return Envelope(record.topic, record.partition, record.offset, key, record.timestamp, headers, event)


def decode_record(record: ConsumerRecord) -> Envelope:
    """A consumed record as an :class:`Envelope`; raise ``CodecError`` if it is not a valid event."""
    return _decode_record(record)


def partition_lag(consumer: AIOKafkaConsumer) -> dict[TopicPartition, int]:
    """Records behind the end of each assigned partition: the last fetch response's high watermark minus
    the consumer's position (the next offset it hands out).

    The high watermark comes with every fetch response, so it is right on the embedded broker too, whose
    ListOffsets "latest" answer is not. A partition not fetched yet, or whose position is still being
    reset, has no entry. Synchronous and network-free, so it can run at scrape time; the position is read
    from aiokafka's assignment state because its public ``position()`` is a coroutine that may wait.
    """
    lags: dict[TopicPartition, int] = {}
    subscription = getattr(consumer, "_subscription", None)
    assignment = getattr(getattr(subscription, "subscription", None), "assignment", None)
    if assignment is None:
        return lags
    for tp in assignment.tps:
        state = assignment.state_value(tp)
        if state is None or state.highwater is None or not state.has_valid_position:
            continue
        lags[tp] = max(int(state.highwater) - int(state.position), 0)
    return lags


class _Lagging(Protocol):
    @property
    def lag_group(self) -> str: ...

    def lag(self) -> dict[TopicPartition, int]: ...


class ConsumerLag(Collector):
    """``gravity_kafka_consumer_lag{group,topic,partition}``: records behind the end, per partition, of
    every consumer given to :meth:`track`, computed when the registry is scraped.

    Register one on a service's Prometheus registry (``gravity_service.metrics.ServiceMetrics`` does) and
    track each :class:`EventConsumer` and :class:`ChangeStreamReader` the lifespan starts. Consumers are
    held weakly, and a closed one reports nothing, so a lifespan that ends needs no untracking.
    """

    def __init__(self) -> None:
        self._tracked: weakref.WeakSet[_Lagging] = weakref.WeakSet()

    def track(self, consumer: _Lagging) -> None:
        """Report ``consumer``'s lag from now on, labelled with its ``lag_group``."""
        self._tracked.add(consumer)

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        for consumer in list(self._tracked):
            for tp, lag in sorted(consumer.lag().items()):
                family.add_metric([consumer.lag_group, tp.topic, str(tp.partition)], lag)
        return [family]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "gravity_kafka_consumer_lag",
            "Records between a consumer's position and the partition's high watermark.",
            labels=["group", "topic", "partition"],
        )


CONSUMER_LAG = "gravity_kafka_consumer_lag"
"""The metric :class:`ConsumerLag` exposes."""


BatchHandler = Callable[[list[Envelope]], Awaitable[None]]


class EventConsumer:
    """A consumer-group member: ``getmany`` → decode → ``handler(batch)`` → commit.

    Offsets are committed only after the handler returned, so the handler's effects must be durable
    when it returns and idempotent (a crash re-delivers the batch). ``stop()`` lets the batch in hand
    finish and commit; the loop then leaves the group.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        topics: Sequence[str],
        group_id: str,
        handler: BatchHandler,
        producer: AIOKafkaProducer,
        client_id: str,
        max_records: int = 500,
        retry_backoff: float = 0.5,
    ) -> None:
        self._topics = list(topics)
        self._handler = handler
        self._producer = producer
        self._max_records = max_records
        self._retry_backoff = retry_backoff
        self._stopping = asyncio.Event()
        self._closed = False
        self.lag_group = group_id
        """The ``group`` label of this consumer's lag: its consumer group."""
        self.caught_up = asyncio.Event()
        """Set after the first poll that found nothing new: the consumer has read what was there."""
        self._consumer = AIOKafkaConsumer(
            *self._topics,
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=group_id,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            max_poll_interval_ms=300_000,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=min(1_000, settings.kafka_session_timeout_ms // 3),
        )

    async def start(self) -> None:
        """Connect and join the group."""
        await self._consumer.start()

    def stop(self) -> None:
        """Ask the loop to finish its batch and return."""
        self._stopping.set()

    async def close(self) -> None:
        """Leave the group and close the connection."""
        self._closed = True
        await self._consumer.stop()

    def lag(self) -> dict[TopicPartition, int]:
        """Records behind the end of each assigned partition (see :func:`partition_lag`); none once closed."""
        return {} if self._closed else partition_lag(self._consumer)

    async def run(self, *, until_idle: bool = False) -> None:
        """Consume until :meth:`stop` (or, with ``until_idle``, until a poll finds nothing)."""
        while not self._stopping.is_set():
            batch = await self._consumer.getmany(timeout_ms=200, max_records=self._max_records)
            records = [r for part in batch.values() for r in part]
            if not records:
                self.caught_up.set()
                if until_idle:
                    return
                continue
            await self._process(batch)

    async def _process(
        self,
        batch: dict[TopicPartition, list[ConsumerRecord]],
    ) -> None:
        envelopes: list[Envelope] = []
        for part in batch.values():
            for record in part:
                try:
                    envelopes.append(_decode_record(record))
                except CodecError as exc:
                    await dead_letter(self._producer, record, exc)
        while True:
            try:
                if envelopes:
                    await self._handler(envelopes)
                break
            except Exception:
                log.exception("handler failed on a batch of %d; retrying it", len(envelopes))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self._retry_backoff)
                if self._stopping.is_set():
                    # Not committed: whoever owns the partitions next re-reads the batch.
                    for tp, part in batch.items():
                        self._consumer.seek(tp, part[0].offset)
                    return
        try:
            await self._consumer.commit({tp: part[-1].offset + 1 for tp, part in batch.items() if part})
        except CommitFailedError:
            # A rebalance took the partitions away: the new owner re-reads (at-least-once).
            log.warning("commit failed after a rebalance; records will be re-delivered")


EnvelopeApplier = Callable[[Envelope], None]


class ChangeStreamReader:
    """Replays compacted change topics from the beginning into memory, then follows them.

    Not a group member: every copy of a service reads every partition. ``apply`` is called for each
    record in order and must be a quick in-memory update. Undecodable records are logged and skipped
    (the registry is the only producer; the record stays on the topic for inspection).
    """

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        topics: Sequence[str],
        apply: EnvelopeApplier,
        client_id: str,
    ) -> None:
        self._topics = list(topics)
        self._apply = apply
        self._stopping = asyncio.Event()
        self._closed = False
        self.lag_group = client_id
        """The ``group`` label of this reader's lag: not a consumer group, so its client id."""
        self.ready = asyncio.Event()
        """Set once everything on the topics at start has been applied."""
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            client_id=client_id,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        )

    async def start(self, *, timeout: float = 30.0) -> None:
        """Connect and assign every partition of the topics at offset 0."""
        await self._consumer.start()
        deadline = time.monotonic() + timeout
        partitions: list[TopicPartition] = []
        for topic in self._topics:
            while True:
                ids: Iterable[int] | None = self._consumer.partitions_for_topic(topic)
                if ids:
                    partitions.extend(TopicPartition(topic, p) for p in sorted(ids))
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"topic {topic} has no partitions in metadata")
                await self._consumer._client.force_metadata_update()
                await asyncio.sleep(0.1)
        self._consumer.assign(partitions)
        for tp in partitions:
            self._consumer.seek(tp, 0)

    def stop(self) -> None:
        """Ask the loop to return."""
        self._stopping.set()

    async def close(self) -> None:
        """Close the connection."""
        self._closed = True
        await self._consumer.stop()

    def lag(self) -> dict[TopicPartition, int]:
        """Records behind the end of each partition (see :func:`partition_lag`); none once closed."""
        return {} if self._closed else partition_lag(self._consumer)

    async def run(self) -> None:
        """Apply records until :meth:`stop`; set ``ready`` at the first empty poll."""
        while not self._stopping.is_set():
            batch = await self._consumer.getmany(timeout_ms=200, max_records=1000)
            if not any(batch.values()):
                self.ready.set()
                continue
            for part in batch.values():
                for record in part:
                    try:
                        envelope = _decode_record(record)
                    except CodecError as exc:
                        log.error(
                            "skipping undecodable change record topic=%s partition=%s offset=%s: %s",
                            record.topic,
                            record.partition,
                            record.offset,
                            str(exc)[:500],
                        )
                        continue
                    self._apply(envelope)
