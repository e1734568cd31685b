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
from collections.abc import Awaitable, Callable, Iterable, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CommitFailedError, KafkaError
from opentelemetry.context import Context

from gravity_events import gaps
from gravity_events import topics as topic_names
from gravity_events.codec import CodecError, encode, encode_headers
from gravity_events.lag import CONSUMER_LAG, ConsumerLag, StoppableConsumer, partition_lag
from gravity_events.models import Event
from gravity_events.records import Envelope, decode_record, record_headers
from gravity_events.settings import KafkaSettings
from gravity_events.streams import ChangeStreamReader
from gravity_events.topics import ALL_TOPICS, TopicSpec

__all__ = [
    "CONSUMER_LAG",
    "MAX_RECORD_BYTES",
    "BatchPartitioner",
    "ChangeStreamReader",
    "ConsumerLag",
    "Envelope",
    "EventConsumer",
    "MissingTopicsError",
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


async def offsets_at(
    consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition], at_ms: int
) -> dict[TopicPartition, int]:
    """Where each partition is at ``at_ms``: its first record stamped at or after it, else its end.

    ``offsets_for_times`` answers "no record that recent" with no offset on Apache Kafka, but with offset 0
    and timestamp -1 on the embedded broker (Tansu 0.6), and aiokafka hands that on as a hit. Taken at its
    word it replays the whole partition, which on a large one takes minutes.
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


class MissingTopicsError(RuntimeError):
    """Topics a service needs are not on the broker, and it may not create them (production)."""


async def ensure_topics(
    settings: KafkaSettings,
    specs: Sequence[TopicSpec] = ALL_TOPICS,
    *,
    timeout: float = 60.0,
    create: bool = True,
) -> None:
    """Create the topics that are missing and wait until every one is in the metadata.

    Safe to run concurrently from every service: "already exists" counts as success. With ``create``
    false (every service in production) it only verifies: topics are provisioned by one explicit step,
    ``gravity-registry topics``, with the cluster's replication settings, and a missing one raises
    :class:`MissingTopicsError` instead of being created with a service's defaults.
    """
    deadline = time.monotonic() + timeout
    admin = AIOKafkaAdminClient(**settings.client_options(), client_id="gravity-bootstrap")
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
        if missing and not create:
            raise MissingTopicsError(
                f"topics missing on the broker: {', '.join(s.name for s in missing)}; "
                "provision them with `gravity-registry topics`"
            )
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


MAX_RECORD_BYTES = 4 * 1024 * 1024
"""The largest record a producer sends (aiokafka's default is 1 MiB): a raw record carries ingest's whole
request body (up to 1 MiB) plus its envelope, so it must fit with room to spare. Topics are created with
``max.message.bytes`` to match (see :mod:`gravity_events.topics`)."""


class BatchPartitioner:
    """Sends every record to one partition for ``period`` seconds, then to the next (round robin).

    A produce request then carries records of one or two partitions, not of every partition that the
    keys hash to. For topics whose key decides nothing downstream (the raw topic: its readers dedupe
    by message id), on a broker that writes each partition of a request as objects of its own one
    after the other (Tansu's S3 engine: two object PUTs a partition), that is the difference between
    two and twenty-four PUTs per request. Records still spread over all partitions over time.
    """

    def __init__(self, period: float = 0.05) -> None:
        self._period = period
        self._turn = 0
        self._until = 0.0

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        now = time.monotonic()
        if now >= self._until:
            self._turn += 1
            self._until = now + self._period
        choices = available or all_partitions
        return choices[self._turn % len(choices)]


def make_producer(
    settings: KafkaSettings,
    *,
    client_id: str,
    linger_ms: int = 1,
    partitioner: Callable[[bytes | None, list[int], list[int]], int] | None = None,
) -> AIOKafkaProducer:
    """A producer that waits for every in-sync replica (``acks="all"``); ``partitioner`` replaces the
    key hash (see :class:`BatchPartitioner`)."""
    extra: dict[str, object] = {} if partitioner is None else {"partitioner": partitioner}
    return AIOKafkaProducer(
        **settings.client_options(),
        **extra,
        client_id=client_id,
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        linger_ms=linger_ms,
        max_request_size=MAX_RECORD_BYTES,
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


BatchHandler = Callable[[list[Envelope]], Awaitable[None]]


class EventConsumer(StoppableConsumer):
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
        super().__init__()
        self.lag_group = group_id
        """The ``group`` label of this consumer's lag: its consumer group."""
        self.caught_up = asyncio.Event()
        """Set after the first poll that found nothing new: the consumer has read what was there."""
        self._consumer = AIOKafkaConsumer(
            *self._topics,
            **settings.client_options(),
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

    async def run(self, *, until_idle: bool = False) -> None:
        """Consume until :meth:`stop` (or, with ``until_idle``, until a poll finds nothing)."""
        while not self._stopping.is_set():
            batch = await gaps.getmany(self._consumer, timeout_ms=200, max_records=self._max_records)
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
                    envelopes.append(decode_record(record))
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
