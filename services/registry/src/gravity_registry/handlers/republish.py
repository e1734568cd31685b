"""Recovery of the change streams from PostgreSQL, the source of truth.

The subscriptions, API-key and apps streams are compacted topics whose latest record per key is what
ingest, realtime and fanout believe. A broker that lost them (a new cluster, topics deleted and
re-created, a restore of the broker without the database) leaves those services refusing every tenant.
:func:`republish` reads the three topics to their end, compares them with the database, and queues the
current state of every entity of a stream through the outbox, in one transaction:

- at start (``mode="check"``): only a stream that lacks a live entity of the database, i.e. an entity
  with no live record on the topic (none, or a removal last) and none waiting in the outbox. A registry
  restarted on an intact broker republishes nothing.
- ``gravity-registry republish`` (``mode="force"``): every stream; with ``prune`` also a removal for every
  key live on a topic that the database does not know (after the database was restored from a backup
  older than the broker, a key or subscription deleted since would otherwise stay valid). Pruning is
  never automatic: a broker shared by registries of different databases would lose the others' entities.

Republishing is idempotent: readers keep the latest record per key, and a republished record carries the
same state as the entity's last own record. Several copies may start at once: one republishes at a time
(``REPUBLISH_LOCK``, taken with try-lock: a copy that finds it taken leaves the work to the holder), and
the rows are read ``FOR SHARE`` in the transaction that queues them, so a change in flight is waited for
and its own record, queued first, is published first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg

from gravity_events import topics
from gravity_events.codec import encode, encode_headers
from gravity_events.ids import utcnow
from gravity_events.kafka import ChangeStreamReader, Envelope
from gravity_events.models import (
    ApiKeyActive,
    ApiKeyRevoked,
    AppDeleted,
    AppUpserted,
    Event,
    SubscriptionActive,
    SubscriptionRemoved,
)
from gravity_events.settings import KafkaSettings
from gravity_registry import db
from gravity_registry.handlers.apps import app_event
from gravity_registry.handlers.outbox import OutboxPublisher

__all__ = ["CHANGE_STREAMS", "StreamState", "drain_outbox", "read_live_keys", "republish"]

log = logging.getLogger(__name__)

CHANGE_STREAMS = (topics.SUBSCRIPTIONS, topics.API_KEYS, topics.APPS)
"""The compacted topics the registry is the only writer of."""

_LIVE: dict[str, type[Event]] = {
    topics.SUBSCRIPTIONS: SubscriptionActive,
    topics.API_KEYS: ApiKeyActive,
    topics.APPS: AppUpserted,
}


@dataclass(frozen=True, slots=True)
class _Stream:
    topic: str
    read: Callable[[asyncpg.Connection], Awaitable[list[asyncpg.Record]]]
    key: Callable[[Any], str]
    live: Callable[[Any, datetime], Event]
    removal: Callable[[str, str], Event]


_STREAMS = (
    _Stream(
        topics.SUBSCRIPTIONS,
        db.all_subscriptions,
        lambda r: r["subscription_id"],
        lambda r, _now: SubscriptionActive(
            subscription_id=r["subscription_id"],
            tenant_id=r["tenant_id"],
            verification_token_sha256=r["verification_token_sha256"],
        ),
        lambda key, tenant: SubscriptionRemoved(subscription_id=key, tenant_id=tenant),
    ),
    _Stream(
        topics.API_KEYS,
        db.all_api_keys,
        lambda r: r["key_id"],
        lambda r, _now: ApiKeyActive(
            key_id=r["key_id"], tenant_id=r["tenant_id"], key_sha256=r["key_sha256"]
        ),
        lambda key, tenant: ApiKeyRevoked(key_id=key, tenant_id=tenant),
    ),
    _Stream(
        topics.APPS,
        db.all_apps,
        lambda r: r["app_id"],
        app_event,
        lambda key, tenant: AppDeleted(app_id=key, tenant_id=tenant),
    ),
)


@dataclass(frozen=True, slots=True)
class StreamState:
    """What :func:`republish` found on one change stream and what it queued."""

    topic: str
    in_database: int
    """Entities the database has."""
    on_topic: int
    """Keys whose latest record on the topic is a live state."""
    missing: int
    """Entities of the database with no live record on the topic and none waiting in the outbox."""
    unknown: int
    """Keys live on the topic that the database does not have (removed only with ``prune``)."""
    republished: int
    removed: int


async def read_live_keys(settings: KafkaSettings, *, timeout: float = 60.0) -> dict[str, dict[str, str]]:
    """For each change stream: key → tenantId of every key whose latest record is a live state, read from
    offset 0 to the end (the first empty poll, as every reader of the streams decides it)."""
    latest: dict[str, dict[str, Event]] = {topic: {} for topic in CHANGE_STREAMS}

    def apply(envelope: Envelope) -> None:
        if envelope.key is not None:
            latest[envelope.topic][envelope.key] = envelope.event

    reader = ChangeStreamReader(
        settings, topics=CHANGE_STREAMS, apply=apply, client_id="gravity-registry-republish"
    )
    await reader.start(timeout=timeout)
    task = asyncio.create_task(reader.run())
    ready = asyncio.create_task(reader.ready.wait())
    try:
        done, _ = await asyncio.wait({task, ready}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()  # the reader failed: raise its error
            raise RuntimeError("the change-stream reader stopped before it was ready")
        if ready not in done:
            raise TimeoutError(f"reading the change streams took longer than {timeout} s")
    finally:
        reader.stop()
        ready.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ready
        await task
        await reader.close()
    return {
        topic: {
            key: str(getattr(event, "tenant_id", ""))
            for key, event in by_key.items()
            if isinstance(event, _LIVE[topic])
        }
        for topic, by_key in latest.items()
    }


async def republish(
    pool: asyncpg.Pool,
    settings: KafkaSettings,
    *,
    mode: Literal["check", "force"],
    prune: bool = False,
    read_timeout: float = 60.0,
) -> list[StreamState] | None:
    """Compare the change streams with the database and queue what they lack (see the module's text);
    None when another copy holds ``REPUBLISH_LOCK``. The outbox publisher sends the queued records."""
    on_topic = await read_live_keys(settings, timeout=read_timeout)
    now = utcnow()
    states: list[StreamState] = []
    async with pool.acquire() as conn, conn.transaction():
        if not await db.try_republish_lock(conn):
            log.info("another registry copy is republishing the change streams; leaving it to that one")
            return None
        pending = await db.pending_outbox_keys(conn)
        records: list[tuple[str, str, bytes, list[tuple[str, bytes]]]] = []

        def queue(topic: str, key: str, event: Event) -> None:
            records.append((topic, key, encode(event), list(encode_headers(event))))

        for stream in _STREAMS:
            rows = {stream.key(r): r for r in await stream.read(conn)}
            live = on_topic[stream.topic]
            missing = [k for k in rows if k not in live and (stream.topic, k) not in pending]
            unknown = {k: t for k, t in live.items() if k not in rows and (stream.topic, k) not in pending}
            republished = removed = 0
            if mode == "force" or missing:
                for key, row in rows.items():
                    queue(stream.topic, key, stream.live(row, now))
                republished = len(rows)
            if prune:
                for key, tenant_id in unknown.items():
                    queue(stream.topic, key, stream.removal(key, tenant_id))
                removed = len(unknown)
            state = StreamState(
                stream.topic, len(rows), len(live), len(missing), len(unknown), republished, removed
            )
            if missing:
                log.warning(
                    "%s lacks %d of the database's %d entities: republishing all of them",
                    stream.topic,
                    len(missing),
                    len(rows),
                )
            elif unknown and not prune:
                log.warning(
                    "%s holds %d keys the database does not know; `gravity-registry republish --prune` "
                    "removes them",
                    stream.topic,
                    len(unknown),
                )
            states.append(state)
        if records:
            await db.enqueue_outbox_many(conn, records=records)
    return states


async def drain_outbox(pool: asyncpg.Pool, publisher: OutboxPublisher, *, timeout: float) -> bool:
    """Publish until the outbox is empty; True if it emptied within ``timeout`` seconds. While another copy
    holds the outbox lock this waits for that copy to publish."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await publisher.publish_pending():
            continue
        async with pool.acquire() as conn:
            if await db.outbox_depth(conn) == 0:
                return True
        await asyncio.sleep(0.1)
    return False
