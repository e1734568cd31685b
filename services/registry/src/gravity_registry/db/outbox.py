"""The outbox: change-stream records queued in the transaction of the change, published later."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import orjson

__all__ = [
    "OUTBOX_LOCK",
    "REPUBLISH_LOCK",
    "delete_outbox",
    "enqueue_outbox",
    "enqueue_outbox_many",
    "outbox_depth",
    "pending_outbox",
    "pending_outbox_keys",
    "try_outbox_lock",
    "try_republish_lock",
]

OUTBOX_LOCK = 0x6F75_7462  # "outb": one outbox publisher at a time keeps per-key order
REPUBLISH_LOCK = 0x7265_7075  # "repu": one republish of the change streams at a time across copies

OutboxRecord = tuple[str, str, bytes, Sequence[tuple[str, bytes]]]
"""(topic, key, value, headers) of one change-stream record."""


def _headers_json(headers: Sequence[tuple[str, bytes]]) -> str:
    return orjson.dumps([[k, v.decode()] for k, v in headers]).decode()


async def enqueue_outbox(
    conn: asyncpg.Connection, *, topic: str, key: str, value: bytes, headers: Sequence[tuple[str, bytes]]
) -> None:
    """Queue a change-stream record in the caller's transaction."""
    await conn.execute(
        "INSERT INTO outbox (topic, key, value, headers) VALUES ($1, $2, $3, $4::jsonb)",
        topic,
        key,
        value,
        _headers_json(headers),
    )


async def enqueue_outbox_many(conn: asyncpg.Connection, *, records: Sequence[OutboxRecord]) -> None:
    """Queue many change-stream records, in this order, in the caller's transaction."""
    await conn.executemany(
        "INSERT INTO outbox (topic, key, value, headers) VALUES ($1, $2, $3, $4::jsonb)",
        [(topic, key, value, _headers_json(headers)) for topic, key, value, headers in records],
    )


async def try_republish_lock(conn: asyncpg.Connection) -> bool:
    """Take REPUBLISH_LOCK for the caller's transaction if no other copy is republishing."""
    taken: bool = await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", REPUBLISH_LOCK)
    return taken


async def pending_outbox_keys(conn: asyncpg.Connection) -> set[tuple[str, str]]:
    """(topic, key) of every record still waiting in the outbox."""
    rows = await conn.fetch("SELECT DISTINCT topic, key FROM outbox")
    return {(r["topic"], r["key"]) for r in rows}


async def outbox_depth(conn: asyncpg.Connection) -> int:
    """How many records wait in the outbox."""
    depth: int = await conn.fetchval("SELECT count(*) FROM outbox")
    return depth


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
