"""The projection: raw notifications become exactly one stored message per (tenant, rcMessageId), and
``sms_inbound`` is published for each stored message not yet published, in the gateway's order."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
from aiokafka import AIOKafkaProducer

from gravity_events import logs, topics, tracing
from gravity_events.codec import RECEIVED_AT_HEADER, encode, encode_headers
from gravity_events.ids import TENANT_ID_RE, format_timestamp, message_id_for
from gravity_events.kafka import Envelope
from gravity_events.models import RcNotification
from gravity_events.ringcentral import NotificationError, extract_inbound_sms
from gravity_registry import db
from gravity_registry.handlers.messages import sms_event

if TYPE_CHECKING:
    from gravity_service.metrics import RegistryMetrics

__all__ = ["project_batch", "stamp_in_gateway_order"]

log = logging.getLogger(__name__)


def _clean(text: str) -> str:
    """PostgreSQL text cannot hold NUL; keep everything else exactly."""
    return text.replace("\x00", "\ufffd")


async def _dead_letter(producer: AIOKafkaProducer, envelope: Envelope, reason: str) -> None:
    log.error(
        "dead-lettering %s partition=%s offset=%s: %s",
        envelope.topic,
        envelope.partition,
        envelope.offset,
        reason,
    )
    headers = [
        *encode_headers(envelope.event),
        ("dlq-origin-topic", envelope.topic.encode()),
        ("dlq-origin-partition", str(envelope.partition).encode()),
        ("dlq-origin-offset", str(envelope.offset).encode()),
        ("dlq-error", reason[:1000].encode()),
    ]
    key = envelope.key.encode() if envelope.key is not None else None
    await producer.send_and_wait(topics.DEAD_LETTER, encode(envelope.event), key=key, headers=headers)


async def project_batch(
    batch: Sequence[Envelope],
    *,
    pool: asyncpg.Pool,
    producer: AIOKafkaProducer,
    lock_timeout: float,
    metrics: RegistryMetrics | None = None,
) -> None:
    """Store each raw notification once and publish ``sms_inbound`` for what is not yet published.
    Notifications of tenants this registry does not know are skipped.

    Holding the batch's tenants' order locks (other registry copies project other raw partitions of the
    same tenants): 1. in one transaction, insert the batch (ON CONFLICT DO NOTHING on (tenant,
    rcMessageId)), read back which of its messages are unpublished (new ones, and ones a crash left
    unpublished) and give each a receivedAt after the tenant's last published message; 2. publish them in
    that order and wait for every acknowledgement; 3. mark them published. So each tenant's stream is in
    the gateway's (receivedAt, messageId) order, the order a resume with ``since`` reads in, and a row is
    committed before its event exists. The consumer commits offsets only after this returns. A crash
    anywhere repeats at most step 2 for some messages: never a second row. A lock not granted within
    ``lock_timeout`` seconds fails the batch before anything is stored; the consumer tries it again.
    """
    rows: dict[tuple[str, str], db.MessageRow] = {}
    origins: dict[tuple[str, str], Envelope] = {}
    for envelope in batch:
        event = envelope.event
        if not isinstance(event, RcNotification):
            continue
        try:
            if not TENANT_ID_RE.match(event.tenant_id):
                raise NotificationError(f"tenant id {event.tenant_id!r} is not valid")
            body = event.notification.get("body")
            if not isinstance(body, dict):
                raise NotificationError("notification has no body object")
            sms = extract_inbound_sms(body)
        except NotificationError as exc:
            await _dead_letter(producer, envelope, str(exc))
            continue
        key = (event.tenant_id, sms.rc_message_id)
        origins.setdefault(key, envelope)
        rows.setdefault(
            key,
            db.MessageRow(
                tenant_id=event.tenant_id,
                rc_message_id=sms.rc_message_id,
                message_id=message_id_for(event.tenant_id, sms.rc_message_id),
                from_number=_clean(sms.from_number),
                to_number=_clean(sms.to_number),
                body=_clean(sms.text),
                timestamp=sms.creation_time,
                received_at=event.received_at,
                conversation_id=_clean(sms.conversation_id) if sms.conversation_id is not None else None,
            ),
        )
    if not rows:
        return
    tenant_ids = sorted({tenant for tenant, _ in rows})
    async with pool.acquire() as conn:
        known = await db.known_tenants(conn, tenant_ids=tenant_ids)
        if len(known) < len(tenant_ids):
            # a tenant deleted since ingest accepted it, or another deployment's sharing the raw topic:
            # there is no one to store it for, and publishing it would send it on to no one's apps
            foreign = [key for key in rows if key[0] not in known]
            log.info(
                "skipped %d notification(s) of tenants this registry does not know: %s",
                len(foreign),
                ", ".join(sorted({tenant for tenant, _ in foreign})[:5]),
            )
            for key in foreign:
                del rows[key], origins[key]
            if not rows:
                return
            tenant_ids = sorted(known)
        try:
            await db.lock_tenants(conn, tenant_ids=tenant_ids, timeout_seconds=lock_timeout)
        except asyncpg.LockNotAvailableError:
            log.warning(
                "a tenant order lock of this batch was not granted within %.1f s (another registry copy holds"
                " it while it publishes); nothing stored, the batch is tried again",
                lock_timeout,
            )
            raise
        try:
            try:
                pending = await _store(conn, rows, tenant_ids)
            except asyncpg.DataError:  # a value PostgreSQL refuses: find it, so it cannot block everyone
                await _drop_unstorable(conn, producer, rows, origins)
                pending = await _store(conn, rows, tenant_ids)
            futures = []
            for row, received_at in pending:  # committed first: a resume's history read sees what is live
                event = sms_event(row)
                stamp = format_timestamp(received_at).encode()
                origin = origins.get((row["tenant_id"], row["rc_message_id"]))  # none: a crash left it
                # the event continues the notification's trace (ingest put its context on the raw record)
                with tracing.span(
                    "sms_inbound publish",
                    parent=origin.headers if origin is not None else None,
                    kind=tracing.SpanKind.PRODUCER,
                ):
                    headers = [*encode_headers(event), (RECEIVED_AT_HEADER, stamp)]
                futures.append(
                    await producer.send(
                        topics.SMS_INBOUND, encode(event), key=row["tenant_id"].encode(), headers=headers
                    )
                )
            await asyncio.gather(*futures)
            if pending:
                await db.mark_published(conn, keys=[(r["tenant_id"], r["rc_message_id"]) for r, _ in pending])
            _observe(pending, origins, metrics)
        finally:
            await db.unlock_tenants(conn, tenant_ids=tenant_ids)


def _observe(
    pending: Sequence[tuple[asyncpg.Record, datetime]],
    origins: dict[tuple[str, str], Envelope],
    metrics: RegistryMetrics | None,
) -> None:
    """Log each published message and, with ``metrics``, count it and time it from its raw record's
    append to now (every acknowledgement is in)."""
    now = time.time()
    for row, _ in pending:
        origin = origins.get((row["tenant_id"], row["rc_message_id"]))
        log.info(
            "stored message",
            extra=logs.ids(
                tenant_id=row["tenant_id"],
                message_id=row["message_id"],
                rc_message_id=row["rc_message_id"],
                trace_id=tracing.trace_id_of(origin.headers) if origin is not None else None,
            ),
        )
        if metrics is None:
            continue
        metrics.labels(metrics.messages_stored, tenant_id=row["tenant_id"]).inc()
        if origin is not None:
            metrics.projection_seconds.observe(max(now - origin.timestamp_ms / 1000, 0.0))


async def _store(
    conn: asyncpg.Connection, rows: dict[tuple[str, str], db.MessageRow], tenant_ids: list[str]
) -> list[tuple[Any, datetime]]:
    """One transaction (the caller holds the tenants' order locks): insert, read back what is unpublished,
    stamp it after each tenant's last published message. Returns the rows to publish with their stamps."""
    async with conn.transaction():
        last = await db.last_published(conn, tenant_ids=tenant_ids)
        await db.insert_messages(conn, rows=list(rows.values()))
        pending = stamp_in_gateway_order(await db.unpublished_messages(conn, keys=list(rows)), last)
        moved = [(r["tenant_id"], r["rc_message_id"], t) for r, t in pending if t != r["received_at"]]
        if moved:
            await db.restamp_messages(conn, stamps=moved)
    return pending


async def _drop_unstorable(
    conn: asyncpg.Connection,
    producer: AIOKafkaProducer,
    rows: dict[tuple[str, str], db.MessageRow],
    origins: dict[tuple[str, str], Envelope],
) -> None:
    """Try each row alone, rolled back either way; dead-letter and drop the ones PostgreSQL refuses."""
    for key, row in list(rows.items()):
        trial = conn.transaction()
        await trial.start()
        try:
            await db.insert_messages(conn, rows=[row])
        except asyncpg.DataError as exc:
            await _dead_letter(producer, origins[key], f"not storable: {exc}")
            del rows[key]
        finally:
            await trial.rollback()


_ONE_MS = timedelta(milliseconds=1)


def stamp_in_gateway_order(
    pending: Sequence[Any], last: dict[str, tuple[datetime, str]]
) -> list[tuple[Any, datetime]]:
    """Each row with the receivedAt it is published under, so a tenant's stream is in the gateway's order.

    ``pending`` is in (receivedAt, messageId) order; ``last`` holds each tenant's latest published position.
    A row whose ingest stamp is not after that position (another ingest copy stamped it earlier, another
    raw partition delivered it later, or a crashed copy stored it without publishing) takes the position's
    millisecond when its messageId sorts after the position's, else the next millisecond. Receipt times stay
    ingest's wherever they already follow the stream, and a tenant's clock never runs faster than 1 ms per
    message beyond them.
    """
    last = dict(last)
    stamped = []
    for row in pending:
        at, message_id = row["received_at"], row["message_id"]
        prev = last.get(row["tenant_id"])
        if prev is not None and (at, message_id) <= prev:
            at = prev[0] if message_id > prev[1] else prev[0] + _ONE_MS
        last[row["tenant_id"]] = (at, message_id)
        stamped.append((row, at))
    return stamped
