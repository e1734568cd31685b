"""The delivery log: every attempt fanout reported, read back per app."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

__all__ = ["DeliveryRow", "insert_deliveries", "list_deliveries"]

_DELIVERY_COLUMNS = (
    "app_id, tenant_id, message_id, attempt, succeeded, response_code, duration_ms, error, attempted_at,"
    " next_attempt_at"
)


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """One attempt to store."""

    app_id: str
    tenant_id: str
    message_id: str
    attempt: int
    succeeded: bool
    response_code: int | None
    duration_ms: float
    error: str | None
    attempted_at: datetime
    next_attempt_at: datetime | None


async def insert_deliveries(conn: asyncpg.Connection, *, rows: Sequence[DeliveryRow]) -> None:
    """Insert a batch of attempts; ones already stored are left alone."""
    await conn.execute(
        f"INSERT INTO deliveries ({_DELIVERY_COLUMNS})"  # noqa: S608 - constant column list
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::bool[], $6::int[],"
        " $7::float8[], $8::text[], $9::timestamptz[], $10::timestamptz[])"
        " ON CONFLICT DO NOTHING",
        [r.app_id for r in rows],
        [r.tenant_id for r in rows],
        [r.message_id for r in rows],
        [r.attempt for r in rows],
        [r.succeeded for r in rows],
        [r.response_code for r in rows],
        [r.duration_ms for r in rows],
        [r.error for r in rows],
        [r.attempted_at for r in rows],
        [r.next_attempt_at for r in rows],
    )


async def list_deliveries(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    app_id: str,
    message_id: str | None,
    succeeded: bool | None,
    before: tuple[datetime, str, int] | None,
    limit: int,
) -> list[asyncpg.Record]:
    """One of the tenant's apps' attempts, newest first, strictly before ``before`` (attemptedAt, messageId,
    attempt)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {_DELIVERY_COLUMNS} FROM deliveries"  # noqa: S608 - constant column list
        " WHERE app_id = $1 AND tenant_id = $8"
        " AND ($2::text IS NULL OR message_id = $2)"
        " AND ($3::bool IS NULL OR succeeded = $3)"
        " AND ($4::timestamptz IS NULL OR (attempted_at, message_id, attempt) < ($4, $5::text, $6::int))"
        " ORDER BY attempted_at DESC, message_id DESC, attempt DESC LIMIT $7",
        app_id,
        message_id,
        succeeded,
        before[0] if before else None,
        before[1] if before else None,
        before[2] if before else None,
        limit,
        tenant_id,
    )
    return rows
