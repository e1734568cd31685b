"""Stored messages: the projection's writes (under per-tenant order locks) and the messages API's reads."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

__all__ = [
    "MessageRow",
    "get_message",
    "insert_messages",
    "last_published",
    "latest_message_time",
    "list_messages_after",
    "list_messages_before",
    "lock_tenants",
    "mark_published",
    "message_position",
    "restamp_messages",
    "unlock_tenants",
    "unpublished_messages",
]

_TENANT_ORDER_LOCK = 0x6F72_6472  # "ordr": with a tenant's key, one projector of that tenant at a time

_MESSAGE_COLUMNS = (
    "message_id, direction, from_number, to_number, body, status, rc_message_id, tenant_id,"
    ' "timestamp", received_at'
)


@dataclass(frozen=True, slots=True)
class MessageRow:
    """One message to store."""

    tenant_id: str
    rc_message_id: str
    message_id: str
    from_number: str
    to_number: str
    body: str
    timestamp: datetime
    received_at: datetime
    conversation_id: str | None


async def insert_messages(conn: asyncpg.Connection, *, rows: Sequence[MessageRow]) -> int:
    """Insert a batch in one statement; existing (tenant, rcMessageId) pairs are left alone."""
    status: str = await conn.execute(
        "INSERT INTO messages (tenant_id, rc_message_id, message_id, from_number, to_number, body,"
        ' "timestamp", received_at, conversation_id)'
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],"
        " $7::timestamptz[], $8::timestamptz[], $9::text[])"
        " ON CONFLICT (tenant_id, rc_message_id) DO NOTHING",
        [r.tenant_id for r in rows],
        [r.rc_message_id for r in rows],
        [r.message_id for r in rows],
        [r.from_number for r in rows],
        [r.to_number for r in rows],
        [r.body for r in rows],
        [r.timestamp for r in rows],
        [r.received_at for r in rows],
        [r.conversation_id for r in rows],
    )
    return int(status.rsplit(" ", 1)[1])


def _int32(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big", signed=True)


def _tenant_lock_keys(tenant_ids: Sequence[str]) -> list[int]:
    """The second key of each tenant's order lock (32 bits of SHA-256), sorted: every copy locks in one
    order, so two copies never wait on each other crosswise. A collision only makes two tenants share."""
    return sorted({_int32(t) for t in tenant_ids})


async def lock_tenants(
    conn: asyncpg.Connection, *, tenant_ids: Sequence[str], timeout_seconds: float
) -> None:
    """Take the tenants' order locks for this session (held across transactions, released by
    :func:`unlock_tenants`, by the pool's reset of a released connection, or by the session's end).

    Waits at most ``timeout_seconds`` for each; then raises ``asyncpg.LockNotAvailableError`` having
    released what it took.
    """
    await conn.execute("SELECT set_config('lock_timeout', $1, false)", f"{int(timeout_seconds * 1000)}ms")
    try:
        for key in _tenant_lock_keys(tenant_ids):
            await conn.execute("SELECT pg_advisory_lock($1, $2)", _TENANT_ORDER_LOCK, key)
    except asyncpg.LockNotAvailableError:
        await unlock_tenants(conn, tenant_ids=tenant_ids)
        raise
    finally:
        await conn.execute("RESET lock_timeout")


async def unlock_tenants(conn: asyncpg.Connection, *, tenant_ids: Sequence[str]) -> None:
    """Release what :func:`lock_tenants` took."""
    await conn.execute(
        "SELECT pg_advisory_unlock($1, k) FROM unnest($2::int[]) AS k",
        _TENANT_ORDER_LOCK,
        _tenant_lock_keys(tenant_ids),
    )


async def last_published(
    conn: asyncpg.Connection, *, tenant_ids: Sequence[str]
) -> dict[str, tuple[datetime, str]]:
    """Each tenant's latest published message as (receivedAt, messageId); tenants with none are absent."""
    rows = await conn.fetch(
        "SELECT t.tenant_id, p.received_at, p.message_id FROM unnest($1::text[]) AS t(tenant_id)"
        " CROSS JOIN LATERAL (SELECT received_at, message_id FROM messages m"
        "  WHERE m.tenant_id = t.tenant_id AND m.published"
        "  ORDER BY received_at DESC, message_id DESC LIMIT 1) AS p",
        list(tenant_ids),
    )
    return {r["tenant_id"]: (r["received_at"], r["message_id"]) for r in rows}


async def restamp_messages(conn: asyncpg.Connection, *, stamps: Sequence[tuple[str, str, datetime]]) -> None:
    """Set receivedAt of unpublished messages, given as (tenant, rcMessageId, receivedAt)."""
    await conn.execute(
        "UPDATE messages m SET received_at = s.r FROM unnest($1::text[], $2::text[], $3::timestamptz[])"
        " AS s(t, id, r) WHERE m.tenant_id = s.t AND m.rc_message_id = s.id AND NOT m.published",
        [s[0] for s in stamps],
        [s[1] for s in stamps],
        [s[2] for s in stamps],
    )


async def unpublished_messages(
    conn: asyncpg.Connection, *, keys: Sequence[tuple[str, str]]
) -> list[asyncpg.Record]:
    """Of these (tenant, rcMessageId) pairs, the stored messages not yet published, in gateway order."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages m"  # noqa: S608 - constant column list
        " JOIN unnest($1::text[], $2::text[]) AS k(t, r) ON m.tenant_id = k.t AND m.rc_message_id = k.r"
        " WHERE NOT m.published ORDER BY m.received_at, m.message_id",
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    return rows


async def mark_published(conn: asyncpg.Connection, *, keys: Sequence[tuple[str, str]]) -> None:
    """Record that these messages' ``sms_inbound`` events were acknowledged by the broker."""
    await conn.execute(
        "UPDATE messages m SET published = true FROM unnest($1::text[], $2::text[]) AS k(t, r)"
        " WHERE m.tenant_id = k.t AND m.rc_message_id = k.r AND NOT m.published",
        [k[0] for k in keys],
        [k[1] for k in keys],
    )


async def get_message(conn: asyncpg.Connection, *, tenant_id: str, message_id: str) -> asyncpg.Record | None:
    """One of the tenant's messages by messageId."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages"  # noqa: S608 - constant column list
        " WHERE tenant_id = $1 AND message_id = $2 ORDER BY received_at LIMIT 1",
        tenant_id,
        message_id,
    )
    return row


async def message_position(
    conn: asyncpg.Connection, *, tenant_id: str, message_id: str
) -> tuple[datetime, str] | None:
    """(receivedAt, messageId) of one of the tenant's messages: its place in the gateway's order."""
    row = await conn.fetchrow(
        "SELECT received_at, message_id FROM messages WHERE tenant_id = $1 AND message_id = $2"
        " ORDER BY received_at LIMIT 1",
        tenant_id,
        message_id,
    )
    return (row["received_at"], row["message_id"]) if row is not None else None


async def list_messages_before(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    direction: str | None,
    before: tuple[datetime, str] | None,
    from_number: str | None,
    to_number: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Newest first, strictly before ``before`` in (receivedAt, messageId) order.

    Only the filters given become conditions: a generic plan for ``($n IS NULL OR col = $n)`` cannot use the
    sender and recipient indexes.
    """
    where = ["tenant_id = $1"]
    args: list[Any] = [tenant_id]

    def condition(template: str, *values: Any) -> None:
        refs = []
        for value in values:
            args.append(value)
            refs.append(f"${len(args)}")
        where.append(template.format(*refs))

    if direction is not None:
        condition("direction = {0}", direction)
    if before is not None:
        condition("(received_at, message_id) < ({0}::timestamptz, {1}::text)", *before)
    if from_number is not None:
        condition("from_number = {0}", from_number)
    if to_number is not None:
        condition("to_number = {0}", to_number)
    if since is not None:
        condition("received_at >= {0}::timestamptz", since)
    if until is not None:
        condition("received_at < {0}::timestamptz", until)
    args.append(limit)
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE {' AND '.join(where)}"  # noqa: S608 - fixed fragments
        f" ORDER BY received_at DESC, message_id DESC LIMIT ${len(args)}",
        *args,
    )
    return rows


async def list_messages_after(
    conn: asyncpg.Connection, *, tenant_id: str, after: tuple[datetime, str], limit: int
) -> list[asyncpg.Record]:
    """Oldest first, strictly after ``after`` in (receivedAt, messageId) order (resume)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages"  # noqa: S608 - constant column list
        " WHERE tenant_id = $1 AND (received_at, message_id) > ($2, $3::text)"
        " ORDER BY received_at, message_id LIMIT $4",
        tenant_id,
        after[0],
        after[1],
        limit,
    )
    return rows


async def latest_message_time(conn: asyncpg.Connection, *, tenant_id: str) -> datetime | None:
    """RingCentral creationTime of the tenant's newest stored message."""
    value: datetime | None = await conn.fetchval(
        'SELECT max("timestamp") FROM messages WHERE tenant_id = $1', tenant_id
    )
    return value
