"""The messages API's reads and the two shapes of a stored message: the contract's message object and the
``sms_inbound`` event."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from gravity_events.ids import format_timestamp
from gravity_events.models import SmsInbound
from gravity_registry import db
from gravity_registry.errors import NotFound, ValidationFailed
from gravity_registry.handlers.cursors import decode_position, encode_position

__all__ = ["get_message", "list_messages", "message_json", "sms_event"]


def message_json(row: Any) -> dict[str, Any]:
    """The contract's message object for a stored row."""
    return {
        "messageId": row["message_id"],
        "direction": row["direction"],
        "from": row["from_number"],
        "to": row["to_number"],
        "body": row["body"],
        "status": row["status"],
        "rcMessageId": row["rc_message_id"],
        "tenantId": row["tenant_id"],
        "timestamp": format_timestamp(row["timestamp"]),
        "receivedAt": format_timestamp(row["received_at"]),
    }


def sms_event(row: Any) -> SmsInbound:
    """The ``sms_inbound`` event of a stored message."""
    return SmsInbound(
        message_id=row["message_id"],
        from_=row["from_number"],
        to=row["to_number"],
        body=row["body"],
        rc_message_id=row["rc_message_id"],
        tenant_id=row["tenant_id"],
        timestamp=row["timestamp"],
    )


def _aware(value: datetime | None, field: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValidationFailed(
            f"{field} needs a UTC offset", [{"field": field, "message": "e.g. 2026-03-01T14:30:00.000Z"}]
        )
    return value


async def list_messages(
    pool: asyncpg.Pool,
    *,
    tenant_id: str,
    direction: str | None,
    limit: int,
    cursor: str | None,
    from_number: str | None,
    to_number: str | None,
    since: datetime | None,
    until: datetime | None,
    after: str | None,
) -> dict[str, Any]:
    """One page newest first by (receivedAt, messageId), and the cursor of the next page (or None).

    ``after=<messageId>`` pages oldest first from just after that message instead (the other filters do
    not apply then); an unknown messageId is :class:`NotFound`.
    """
    async with pool.acquire() as conn:
        if after is not None:
            position = await db.message_position(conn, tenant_id=tenant_id, message_id=after)
            if position is None:
                raise NotFound("no such message")
            start = decode_position(cursor) if cursor else position
            rows = await db.list_messages_after(conn, tenant_id=tenant_id, after=start, limit=limit + 1)
        else:
            rows = await db.list_messages_before(
                conn,
                tenant_id=tenant_id,
                direction=direction,
                before=decode_position(cursor) if cursor else None,
                from_number=from_number,
                to_number=to_number,
                since=_aware(since, "since"),
                until=_aware(until, "until"),
                limit=limit + 1,
            )
    page, more = rows[:limit], len(rows) > limit
    next_cursor = encode_position(page[-1]["received_at"], page[-1]["message_id"]) if more else None
    return {"messages": [message_json(r) for r in page], "nextCursor": next_cursor}


async def get_message(pool: asyncpg.Pool, *, tenant_id: str, message_id: str) -> dict[str, Any]:
    """One of the tenant's messages; another tenant's id is :class:`NotFound` too."""
    async with pool.acquire() as conn:
        row = await db.get_message(conn, tenant_id=tenant_id, message_id=message_id)
    if row is None:
        raise NotFound("no such message")
    return message_json(row)
