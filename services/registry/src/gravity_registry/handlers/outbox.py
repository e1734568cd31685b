"""The outbox: every change other services must learn is queued in the transaction of the change itself;
:class:`OutboxPublisher` appends it to the change stream and forgets it only after the broker acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from gravity_events.codec import encode, encode_headers
from gravity_events.models import Event
from gravity_registry import db

if TYPE_CHECKING:
    from gravity_service.metrics import RegistryMetrics

__all__ = ["OutboxPublisher", "enqueue_event"]

log = logging.getLogger(__name__)


async def enqueue_event(conn: asyncpg.Connection, topic: str, key: str, event: Event) -> None:
    """Queue ``event`` for the change stream in the caller's transaction (the outbox)."""
    await db.enqueue_outbox(conn, topic=topic, key=key, value=encode(event), headers=encode_headers(event))


class OutboxPublisher:
    """Appends queued change records to their topics, oldest first, then deletes them.

    One publisher at a time across registry copies (a transaction-scoped advisory lock), so records of
    one key keep their order. ``wake()`` after a commit makes propagation immediate; a periodic sweep
    covers other copies' commits and earlier failures.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        *,
        sweep_seconds: float,
        metrics: RegistryMetrics | None = None,
    ) -> None:
        self._metrics = metrics
        self._pool = pool
        self._producer = producer
        self._sweep = sweep_seconds
        self._wake = asyncio.Event()
        self._stopping = False

    def wake(self) -> None:
        """Something was committed: publish it now."""
        self._wake.set()

    def stop(self) -> None:
        """Finish the round in hand and return."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Publish until stopped."""
        while not self._stopping:
            try:
                while await self.publish_pending():
                    pass
            except Exception:
                log.exception("outbox publishing failed; retrying")
            if self._metrics is not None:
                with contextlib.suppress(Exception):  # a gauge is not worth failing the loop for
                    async with self._pool.acquire() as conn:
                        self._metrics.outbox_depth.set(await db.outbox_depth(conn))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._sweep)
            self._wake.clear()

    async def publish_pending(self, limit: int = 500) -> int:
        """One round: publish up to ``limit`` records; return how many."""
        async with self._pool.acquire() as conn, conn.transaction():
            if not await db.try_outbox_lock(conn):
                return 0
            rows = await db.pending_outbox(conn, limit=limit)
            if not rows:
                return 0
            futures = [
                await self._producer.send(
                    r["topic"],
                    bytes(r["value"]),
                    key=r["key"].encode(),
                    headers=[(k, v.encode()) for k, v in orjson.loads(r["headers"])],
                )
                for r in rows
            ]
            await asyncio.gather(*futures)
            await db.delete_outbox(conn, ids=[r["id"] for r in rows])
            return len(rows)
