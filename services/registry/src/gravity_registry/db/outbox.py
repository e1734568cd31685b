"""The outbox: change-stream records queued in the transaction of the change, published later."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import orjson

__all__ = ["OUTBOX_LOCK", "delete_outbox", "enqueue_outbox", "pending_outbox", "try_outbox_lock"]

OUTBOX_LOCK = 0x6F75_7462  # "outb": one outbox publisher at a time keeps per-key order


async def enqueue_outbox(
    conn: asyncpg.Connection, *, topic: str, key: str, value: bytes, headers: Sequence[tuple[str, bytes]]
) -> None:
    """Queue a change-stream record in the caller's transaction."""
    await conn.execute(
        "INSERT INTO outbox (topic, key, value, headers) VALUES ($1, $2, $3, $4::jsonb)",
        topic,
        key,
        value,
        orjson.dumps([[k, v.decode()] for k, v in headers]).decode(),
    )


async def try_outbox_lock(conn: asyncpg.Connection) -> bool:
    """Take OUTBOX_LOCK for the caller's transaction if no other publisher holds it."""
    taken: bool = await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", OUTBOX_LOCK)
    return taken


async def pending_outbox(conn: asyncpg.Connection, *, limit: int) -> list[asyncpg.Record]:
    """The oldest queued records (call inside a transaction holding OUTBOX_LOCK)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT id, topic, key, value, headers::text AS headers FROM outbox ORDER BY id LIMIT $1", limit
    )
    return rows


async def delete_outbox(conn: asyncpg.Connection, *, ids: Sequence[int]) -> None:
    """Forget published records."""
    await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", list(ids))
