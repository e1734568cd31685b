"""Compacted change streams replayed into memory: :class:`ChangeStreamReader`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition

from gravity_events import gaps
from gravity_events.codec import CodecError
from gravity_events.lag import StoppableConsumer
from gravity_events.records import Envelope, decode_record
from gravity_events.settings import KafkaSettings

__all__ = ["ChangeStreamReader", "EnvelopeApplier"]

log = logging.getLogger(__name__)


EnvelopeApplier = Callable[[Envelope], None]


class ChangeStreamReader(StoppableConsumer):
    """Replays compacted change topics from the beginning into memory, then follows them.

    Not a group member: every copy of a service reads every partition. ``apply`` is called for each
    record in order and must be a quick in-memory update. Undecodable records are logged and skipped
    (the registry is the only producer; the record stays on the topic for inspection).

    ``ready`` means caught up: every partition has been read up to the end asked for at start and to the
    high watermark of a fetch response. An empty poll alone proves nothing: the embedded broker answers
    empty fetches for a while after a restart, and a slow fetch of a large partition returns nothing
    within the poll's timeout, so readiness at the first empty poll let ingest answer 401 to valid
    deliveries before it knew any subscription. The end asked for at start can be low on the embedded
    broker (its ListOffsets answer is unreliable) but never high, so it never holds readiness back past
    the true end.
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
        super().__init__()
        self.lag_group = client_id
        """The ``group`` label of this reader's lag: not a consumer group, so its client id."""
        self.ready = asyncio.Event()
        """Set once everything on the topics at start has been applied (see the class docstring)."""
        self.polls = 0
        """Polls made so far (each waits at most 200 ms)."""
        self._targets: dict[TopicPartition, int] = {}
        self._next: dict[TopicPartition, int] = {}
        self._consumer = AIOKafkaConsumer(
            **settings.client_options(),
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
        self._targets = await self._consumer.end_offsets(partitions)
        self._next = dict.fromkeys(partitions, 0)
        self._consumer.assign(partitions)
        for tp in partitions:
            self._consumer.seek(tp, 0)

    def _caught_up(self) -> bool:
        for tp, target in self._targets.items():
            highwater = self._consumer.highwater(tp)
            if highwater is None or self._next[tp] < max(target, highwater):
                return False
        return True

    async def run(self) -> None:
        """Apply records until :meth:`stop`; set ``ready`` once caught up."""
        while not self._stopping.is_set():
            batch = await gaps.getmany(self._consumer, timeout_ms=200, max_records=1000)
            self.polls += 1
            for tp, part in batch.items():
                if part:
                    self._next[tp] = part[-1].offset + 1
            if not self.ready.is_set() and self._caught_up():
                self.ready.set()
            for part in batch.values():
                for record in part:
                    try:
                        envelope = decode_record(record)
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
