"""RingCentral connections (one per tenant, secrets encrypted by the caller) and the subscriptions
whose verification-token hashes ingest checks."""

from __future__ import annotations

from datetime import datetime

import asyncpg

__all__ = [
    "delete_connection",
    "delete_subscription",
    "due_connections",
    "get_connection",
    "request_backfill_everywhere",
    "save_subscription_state",
    "save_tokens",
    "upsert_connection",
    "upsert_subscription",
]


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


_CONNECTION_COLUMNS = (
    "tenant_id, server_url, client_id, client_secret_enc, jwt_enc, access_token_enc, access_expires_at,"
    " refresh_token_enc, refresh_expires_at, subscription_id, expires_at, status, last_error,"
    " connected_at, next_check_at, backfill_needed"
)


async def get_connection(
    conn: asyncpg.Connection, *, tenant_id: str, lock: str = ""
) -> asyncpg.Record | None:
    """The tenant's connection; ``lock`` is "" or "FOR UPDATE" or "FOR UPDATE SKIP LOCKED"."""
    if lock not in ("", "FOR UPDATE", "FOR UPDATE SKIP LOCKED"):
        raise ValueError(lock)
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {_CONNECTION_COLUMNS} FROM rc_connections WHERE tenant_id = $1 {lock}",  # noqa: S608
        tenant_id,
    )
    return row


async def upsert_connection(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    server_url: str,
    client_id: str,
    client_secret_enc: str,
    jwt_enc: str,
    access_token_enc: str,
    access_expires_at: datetime,
    refresh_token_enc: str | None,
    refresh_expires_at: datetime | None,
    subscription_id: str,
    expires_at: datetime,
    connected_at: datetime,
    next_check_at: datetime,
) -> asyncpg.Record:
    """Create or replace the tenant's connection, status active, a backfill owed; return the row."""
    row: asyncpg.Record = await conn.fetchrow(
        "INSERT INTO rc_connections (tenant_id, server_url, client_id, client_secret_enc, jwt_enc,"  # noqa: S608
        " access_token_enc, access_expires_at, refresh_token_enc, refresh_expires_at, subscription_id,"
        " expires_at, status, last_error, connected_at, next_check_at, backfill_needed)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'active', NULL, $12, $13, true)"
        " ON CONFLICT (tenant_id) DO UPDATE SET server_url = EXCLUDED.server_url,"
        " client_id = EXCLUDED.client_id, client_secret_enc = EXCLUDED.client_secret_enc,"
        " jwt_enc = EXCLUDED.jwt_enc, access_token_enc = EXCLUDED.access_token_enc,"
        " access_expires_at = EXCLUDED.access_expires_at, refresh_token_enc = EXCLUDED.refresh_token_enc,"
        " refresh_expires_at = EXCLUDED.refresh_expires_at, subscription_id = EXCLUDED.subscription_id,"
        " expires_at = EXCLUDED.expires_at, status = 'active', last_error = NULL,"
        " connected_at = EXCLUDED.connected_at, next_check_at = EXCLUDED.next_check_at,"
        f" backfill_needed = true RETURNING {_CONNECTION_COLUMNS}",
        tenant_id,
        server_url,
        client_id,
        client_secret_enc,
        jwt_enc,
        access_token_enc,
        access_expires_at,
        refresh_token_enc,
        refresh_expires_at,
        subscription_id,
        expires_at,
        connected_at,
        next_check_at,
    )
    return row


async def save_tokens(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    access_token_enc: str,
    access_expires_at: datetime,
    refresh_token_enc: str | None,
    refresh_expires_at: datetime | None,
) -> None:
    """Store freshly obtained tokens."""
    await conn.execute(
        "UPDATE rc_connections SET access_token_enc = $2, access_expires_at = $3, refresh_token_enc = $4,"
        " refresh_expires_at = $5 WHERE tenant_id = $1",
        tenant_id,
        access_token_enc,
        access_expires_at,
        refresh_token_enc,
        refresh_expires_at,
    )


async def save_subscription_state(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    subscription_id: str,
    expires_at: datetime,
    status: str,
    last_error: str | None,
    next_check_at: datetime,
    backfill_needed: bool,
) -> None:
    """Record what the keeper found or did."""
    await conn.execute(
        "UPDATE rc_connections SET subscription_id = $2, expires_at = $3, status = $4, last_error = $5,"
        " next_check_at = $6, backfill_needed = $7 WHERE tenant_id = $1",
        tenant_id,
        subscription_id,
        expires_at,
        status,
        last_error,
        next_check_at,
        backfill_needed,
    )


async def delete_connection(conn: asyncpg.Connection, *, tenant_id: str) -> None:
    """Forget the tenant's connection."""
    await conn.execute("DELETE FROM rc_connections WHERE tenant_id = $1", tenant_id)


async def due_connections(conn: asyncpg.Connection, *, now: datetime, limit: int) -> list[str]:
    """Tenants whose connection the keeper should look at now, most overdue first."""
    rows = await conn.fetch(
        "SELECT tenant_id FROM rc_connections WHERE next_check_at <= $1 ORDER BY next_check_at LIMIT $2",
        now,
        limit,
    )
    return [r["tenant_id"] for r in rows]


async def request_backfill_everywhere(conn: asyncpg.Connection, *, now: datetime) -> None:
    """After a start the gateway may have missed events: check every connection now, with backfill."""
    await conn.execute("UPDATE rc_connections SET backfill_needed = true, next_check_at = $1", now)
