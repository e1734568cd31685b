"""The live stream: every realtime copy reads every partition of ``sms_inbound`` from "now".

No consumer group (each copy must see every message): each partition starts at its first record stamped at
or after "start - margin", or at its end when none is that recent (``offsets_at``). Records older than that
moment are skipped anyway, so an end offset that answers low (seen on the embedded broker) replays, never
loses.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from gravity_events import gaps, topics
from gravity_events.codec import RECEIVED_AT_HEADER, CodecError, decode
from gravity_events.kafka import offsets_at, record_headers
from gravity_events.models import SmsInbound
from gravity_realtime.settings import Settings
from gravity_realtime.tables import LiveRouter

__all__ = ["LiveStream"]

log = logging.getLogger(__name__)


class LiveStream:
    """Reads ``sms_inbound`` and hands each record to the router."""

    def __init__(self, settings: Settings, router: LiveRouter) -> None:
        self._router = router
        self._margin_ms = int(settings.start_margin_seconds * 1000)
        self._start_ms = 0
        self._stopping = False
        self.assigned = asyncio.Event()
        self._consumer = AIOKafkaConsumer(
            **settings.client_options(),
            client_id="gravity-realtime",
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        )

    async def start(self, timeout: float = 30) -> None:
        """Assign every partition and position each at "now minus the margin"."""
        await self._consumer.start()
        deadline = time.monotonic() + timeout
        while not (parts := self._consumer.partitions_for_topic(topics.SMS_INBOUND)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topics.SMS_INBOUND} has no partitions")
            await self._consumer._client.force_metadata_update()
            await asyncio.sleep(0.1)
        tps = [TopicPartition(topics.SMS_INBOUND, p) for p in sorted(parts)]
        self._consumer.assign(tps)
        self._start_ms = int(time.time() * 1000) - self._margin_ms
        for tp, offset in (await offsets_at(self._consumer, tps, self._start_ms)).items():
            self._consumer.seek(tp, offset)
        self.assigned.set()

    def stop(self) -> None:
        """Ask the loop to return."""
        self._stopping = True

    async def close(self) -> None:
        """Close the connection."""
        await self._consumer.stop()

    async def run(self) -> None:
        """Route records until stopped."""
        while not self._stopping:
            batch = await gaps.getmany(self._consumer, timeout_ms=200, max_records=1000)
            for records in batch.values():
                for record in records:
                    if record.timestamp < self._start_ms or record.value is None:
                        continue
                    try:
                        event = decode(topics.SMS_INBOUND, record.value, record.headers or ())
                    except CodecError as exc:
                        log.error(
                            "skipping undecodable sms_inbound at %s/%s: %s",
                            record.partition,
                            record.offset,
                            exc,
                        )
                        continue
                    if isinstance(event, SmsInbound):
                        stamp = record_headers(record).get(RECEIVED_AT_HEADER)
                        self._router.route(event, record.value, stamp.decode() if stamp else None)
