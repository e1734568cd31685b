"""Every SQL statement of the registry, one function per query (asyncpg).

Functions take the connection first and keyword-only arguments. Transactions are the caller's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources

import asyncpg
import orjson

__all__ = [
    "MessageRow",
    "apply_migrations",
    "create_api_key",
    "create_tenant",
    "delete_api_key",
    "delete_outbox",
    "delete_subscription",
    "enqueue_outbox",
    "find_api_key",
    "get_message",
    "get_tenant",
    "insert_messages",
    "list_api_keys",
    "list_messages_after",
    "list_messages_before",
    "list_tenants",
    "mark_published",
    "message_position",
    "pending_outbox",
    "touch_api_key",
    "unpublished_messages",
    "upsert_subscription",
]

_MIGRATION_LOCK = 0x6772_6176  # "grav": one migrator at a time across registry copies
OUTBOX_LOCK = 0x6F75_7462  # "outb": one outbox publisher at a time keeps per-key order


# -- migrations -----------------------------------------------------------------------------------


async def apply_migrations(conn: asyncpg.Connection) -> list[str]:
    """Apply the package's ``migrations/*.sql`` not yet recorded; return the versions applied."""
    files = sorted(
        (f.name, f.read_text())
        for f in resources.files("gravity_registry.migrations").iterdir()
        if f.name.endswith(".sql")
    )
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for name, sql in files:
            if name in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", name)
            applied.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied


# -- tenants and keys ------------------------------------------------------------------------------


async def create_tenant(conn: asyncpg.Connection, *, tenant_id: str, name: str, created_at: datetime) -> None:
    """Insert a tenant."""
    await conn.execute(
        "INSERT INTO tenants (tenant_id, name, created_at) VALUES ($1, $2, $3)", tenant_id, name, created_at
    )


async def get_tenant(conn: asyncpg.Connection, *, tenant_id: str) -> asyncpg.Record | None:
    """One tenant, or None."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT tenant_id, name, created_at FROM tenants WHERE tenant_id = $1", tenant_id
    )
    return row


async def list_tenants(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Every tenant, oldest first."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT tenant_id, name, created_at FROM tenants ORDER BY created_at, tenant_id"
    )
    return rows


async def create_api_key(
    conn: asyncpg.Connection, *, key_id: str, tenant_id: str, name: str, key_sha256: str, created_at: datetime
) -> None:
    """Insert a key (its hash only)."""
    await conn.execute(
        "INSERT INTO api_keys (key_id, tenant_id, name, key_sha256, created_at) VALUES ($1, $2, $3, $4, $5)",
        key_id,
        tenant_id,
        name,
        key_sha256,
        created_at,
    )


async def find_api_key(conn: asyncpg.Connection, *, key_sha256: str) -> asyncpg.Record | None:
    """The key with this hash: key_id, tenant_id, last_used_at."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT key_id, tenant_id, last_used_at FROM api_keys WHERE key_sha256 = $1", key_sha256
    )
    return row


async def touch_api_key(conn: asyncpg.Connection, *, key_id: str, now: datetime) -> None:
    """Record a use (callers do this at most once a minute per key)."""
    await conn.execute("UPDATE api_keys SET last_used_at = $2 WHERE key_id = $1", key_id, now)


async def list_api_keys(conn: asyncpg.Connection, *, tenant_id: str) -> list[asyncpg.Record]:
    """A tenant's keys, oldest first, never the secret."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT key_id, name, created_at, last_used_at FROM api_keys WHERE tenant_id = $1"
        " ORDER BY created_at, key_id",
        tenant_id,
    )
    return rows


async def delete_api_key(conn: asyncpg.Connection, *, tenant_id: str, key_id: str) -> bool:
    """Delete one of the tenant's keys; False if it has no such key."""
    status: str = await conn.execute(
        "DELETE FROM api_keys WHERE tenant_id = $1 AND key_id = $2", tenant_id, key_id
    )
    return status.endswith(" 1")


# -- subscriptions -----------------------------------------------------------------------------------


async def upsert_subscription(
    conn: asyncpg.Connection, *, subscription_id: str, tenant_id: str, token_sha256: str, created_at: datetime
) -> None:
    """Create or replace a subscription record."""
    await conn.execute(
        "INSERT INTO subscriptions (subscription_id, tenant_id, verification_token_sha256, created_at)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT (subscription_id) DO UPDATE"
        " SET tenant_id = EXCLUDED.tenant_id,"
        " verification_token_sha256 = EXCLUDED.verification_token_sha256",
        subscription_id,
        tenant_id,
        token_sha256,
        created_at,
    )


async def delete_subscription(conn: asyncpg.Connection, *, subscription_id: str) -> str | None:
    """Delete a subscription; return its tenant, or None if there was none."""
    tenant: str | None = await conn.fetchval(
        "DELETE FROM subscriptions WHERE subscription_id = $1 RETURNING tenant_id", subscription_id
    )
    return tenant


# -- outbox -----------------------------------------------------------------------------------------


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


async def pending_outbox(conn: asyncpg.Connection, *, limit: int) -> list[asyncpg.Record]:
    """The oldest queued records (call inside a transaction holding OUTBOX_LOCK)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT id, topic, key, value, headers::text AS headers FROM outbox ORDER BY id LIMIT $1", limit
    )
    return rows


async def delete_outbox(conn: asyncpg.Connection, *, ids: Sequence[int]) -> None:
    """Forget published records."""
    await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", list(ids))


# -- messages ---------------------------------------------------------------------------------------

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
    """Newest first, strictly before ``before`` in (receivedAt, messageId) order."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages"  # noqa: S608 - constant column list
        " WHERE tenant_id = $1"
        " AND ($2::text IS NULL OR direction = $2)"
        " AND ($3::timestamptz IS NULL OR (received_at, message_id) < ($3, $4::text))"
        " AND ($5::text IS NULL OR from_number = $5)"
        " AND ($6::text IS NULL OR to_number = $6)"
        " AND ($7::timestamptz IS NULL OR received_at >= $7)"
        " AND ($8::timestamptz IS NULL OR received_at < $8)"
        " ORDER BY received_at DESC, message_id DESC LIMIT $9",
        tenant_id,
        direction,
        before[0] if before else None,
        before[1] if before else None,
        from_number,
        to_number,
        since,
        until,
        limit,
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
