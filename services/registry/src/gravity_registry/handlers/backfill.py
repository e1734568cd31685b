"""The backfill: what RingCentral's message store holds that the gateway may have missed, appended to the
raw topic like notifications (the projection stores each message once, however it arrives)."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
from aiokafka import AIOKafkaProducer

from gravity_events import topics
from gravity_events.codec import encode, encode_headers
from gravity_events.ids import format_timestamp, utcnow
from gravity_events.models import RcNotification
from gravity_registry import db
from gravity_registry.ringcentral import SMS_EVENT_FILTER, PagingLimitReached, RingCentralClient

if TYPE_CHECKING:
    from gravity_registry.settings import Settings

__all__ = ["backfill"]

log = logging.getLogger(__name__)


async def backfill(
    pool: asyncpg.Pool,
    producer: AIOKafkaProducer,
    rc: RingCentralClient,
    settings: Settings,
    row: Any,
    access: str,
    subscription_id: str,
) -> int:
    """Append every inbound SMS since the tenant's newest stored one (minus an overlap) to the raw
    topic; since the connection time when it has none."""
    tenant_id = row["tenant_id"]
    async with pool.acquire() as conn:
        newest = await db.latest_message_time(conn, tenant_id=tenant_id)
    overlap = timedelta(seconds=settings.rc_backfill_overlap_seconds)
    # a creationTime in the future (a wrong clock) must not move the start past what is missing
    since = min(newest, utcnow()) - overlap if newest is not None else row["connected_at"]
    futures = []
    seen: set[str] = set()
    try:
        async for rc_id, record in rc.inbound_sms_since(row["server_url"], access, since):
            if rc_id in seen:
                continue
            seen.add(rc_id)
            now = utcnow()
            event = RcNotification(
                tenant_id=tenant_id,
                subscription_id=subscription_id,
                rc_message_id=rc_id,
                received_at=now,
                source="backfill",
                notification={
                    "uuid": f"backfill-{rc_id}",
                    "event": SMS_EVENT_FILTER,
                    "timestamp": format_timestamp(now),
                    "subscriptionId": subscription_id,
                    "body": record,
                },
            )
            futures.append(
                await producer.send(
                    topics.RC_RAW, encode(event), key=rc_id.encode(), headers=encode_headers(event)
                )
            )
    except PagingLimitReached:
        await asyncio.gather(*futures)
        log.warning(
            "backfill of tenant %s stopped at the page limit after %d messages since %s",
            tenant_id,
            len(futures),
            since,
        )
        raise
    await asyncio.gather(*futures)
    if futures:
        log.info("backfilled %d messages for tenant %s since %s", len(futures), tenant_id, since)
    return len(futures)
