"""RingCentral connections (one per tenant, secrets encrypted by the caller) and the subscriptions
whose verification-token hashes ingest checks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

__all__ = [
    "claim_connection",
    "connection_counts",
    "delete_connection",
    "delete_subscription",
    "due_connections",
    "get_connection",
    "request_backfill_everywhere",
    "save_check",
    "subscription_tenant",
    "upsert_connection",
    "upsert_subscription",
]


async def upsert_subscription(
    conn: asyncpg.Connection, *, subscription_id: str, tenant_id: str, token_sha256: str, created_at: datetime
) -> bool:
    """Create a subscription record, or give the tenant's own record a new token; False (and nothing
    changed) when the id is already another tenant's: a subscription id is never remapped."""
    mapped: bool | None = await conn.fetchval(
        "INSERT INTO subscriptions (subscription_id, tenant_id, verification_token_sha256, created_at)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT (subscription_id) DO UPDATE"
        " SET verification_token_sha256 = EXCLUDED.verification_token_sha256"
        " WHERE subscriptions.tenant_id = EXCLUDED.tenant_id RETURNING true",
        subscription_id,
        tenant_id,
        token_sha256,
        created_at,
    )
    return mapped is True


async def subscription_tenant(conn: asyncpg.Connection, *, subscription_id: str) -> str | None:
    """The tenant a subscription id is mapped to, if any."""
    tenant: str | None = await conn.fetchval(
        "SELECT tenant_id FROM subscriptions WHERE subscription_id = $1", subscription_id
    )
    return tenant


async def delete_subscription(
    conn: asyncpg.Connection, *, subscription_id: str, tenant_id: str | None = None
) -> str | None:
    """Delete a subscription (only if it is ``tenant_id``'s, when given); return its tenant, or None if
    there was none (of that tenant)."""
    tenant: str | None = await conn.fetchval(
        "DELETE FROM subscriptions WHERE subscription_id = $1 AND ($2::text IS NULL OR tenant_id = $2)"
        " RETURNING tenant_id",
        subscription_id,
        tenant_id,
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


async def claim_connection(
    conn: asyncpg.Connection, *, tenant_id: str, now: datetime, until: datetime
) -> asyncpg.Record | None:
    """Take a due connection for one check: move its ``next_check_at`` to ``until`` (the check's lease,
    so no other copy takes it meanwhile, and a check that dies is retried then); None when it is not
    due (any more) or gone. Returns the row as it was, ``next_check_at`` already moved."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"UPDATE rc_connections SET next_check_at = $3 WHERE tenant_id = $1 AND next_check_at <= $2"  # noqa: S608
        f" RETURNING {_CONNECTION_COLUMNS}",
        tenant_id,
        now,
        until,
    )
    return row


async def save_check(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    connected_at: datetime,
    checked_subscription_id: str,
    subscription_id: str,
    expires_at: datetime,
    status: str,
    last_error: str | None,
    next_check_at: datetime,
    backfill_needed: bool,
    tokens: dict[str, Any] | None = None,
) -> bool:
    """Record what a keeper check found or did, and the tokens it obtained (``tokens``: the columns
    ``access_token_enc``, ``access_expires_at``, ``refresh_token_enc``, ``refresh_expires_at``), only if
    the connection is still the one the check started from (same ``connected_at`` and subscription);
    False, and nothing written, when it was replaced or removed meanwhile."""
    t = tokens or {}
    result: str = await conn.execute(
        "UPDATE rc_connections SET subscription_id = $4, expires_at = $5, status = $6, last_error = $7,"
        " next_check_at = $8, backfill_needed = $9,"
        " access_token_enc = CASE WHEN $10 THEN $11 ELSE access_token_enc END,"
        " access_expires_at = CASE WHEN $10 THEN $12 ELSE access_expires_at END,"
        " refresh_token_enc = CASE WHEN $10 THEN $13 ELSE refresh_token_enc END,"
        " refresh_expires_at = CASE WHEN $10 THEN $14 ELSE refresh_expires_at END"
        " WHERE tenant_id = $1 AND connected_at = $2 AND subscription_id = $3",
        tenant_id,
        connected_at,
        checked_subscription_id,
        subscription_id,
        expires_at,
        status,
        last_error,
        next_check_at,
        backfill_needed,
        tokens is not None,
        t.get("access_token_enc"),
        t.get("access_expires_at"),
        t.get("refresh_token_enc"),
        t.get("refresh_expires_at"),
    )
    return result.endswith(" 1")


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


async def connection_counts(conn: asyncpg.Connection) -> dict[str, int]:
    """How many connections have each status (statuses with none are absent)."""
    rows = await conn.fetch("SELECT status, count(*) AS n FROM rc_connections GROUP BY status")
    return {r["status"]: r["n"] for r in rows}


async def request_backfill_everywhere(conn: asyncpg.Connection, *, now: datetime) -> None:
    """After a start the gateway may have missed events: check every connection now, with backfill."""
    await conn.execute("UPDATE rc_connections SET backfill_needed = true, next_check_at = $1", now)
