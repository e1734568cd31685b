"""Tenants and their API keys (keys stored as SHA-256 hashes only)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

__all__ = [
    "create_api_key",
    "create_tenant",
    "delete_api_key",
    "find_api_key",
    "get_tenant",
    "known_tenants",
    "list_api_keys",
    "list_tenants",
    "lock_tenant",
    "touch_api_key",
]


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


async def lock_tenant(conn: asyncpg.Connection, *, tenant_id: str) -> bool:
    """Lock the tenant's row until the caller's transaction ends (serialises checks of its limits);
    False if there is no such tenant."""
    found = await conn.fetchval("SELECT true FROM tenants WHERE tenant_id = $1 FOR UPDATE", tenant_id)
    return found is not None


async def list_tenants(
    conn: asyncpg.Connection, *, after: tuple[datetime, str] | None, limit: int
) -> list[asyncpg.Record]:
    """Tenants oldest first, strictly after ``after`` in (createdAt, tenantId) order."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT tenant_id, name, created_at FROM tenants"
        " WHERE $1::timestamptz IS NULL OR (created_at, tenant_id) > ($1, $2::text)"
        " ORDER BY created_at, tenant_id LIMIT $3",
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return rows


async def known_tenants(conn: asyncpg.Connection, *, tenant_ids: Sequence[str]) -> set[str]:
    """Which of ``tenant_ids`` exist."""
    rows = await conn.fetch(
        "SELECT tenant_id FROM tenants WHERE tenant_id = ANY($1::text[])", list(tenant_ids)
    )
    return {r["tenant_id"] for r in rows}


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


async def touch_api_key(conn: asyncpg.Connection, *, tenant_id: str, key_id: str, now: datetime) -> None:
    """Record a use of one of the tenant's keys (callers do this at most once a minute per key)."""
    await conn.execute(
        "UPDATE api_keys SET last_used_at = $3 WHERE tenant_id = $1 AND key_id = $2", tenant_id, key_id, now
    )


async def list_api_keys(
    conn: asyncpg.Connection, *, tenant_id: str, after: tuple[datetime, str] | None, limit: int
) -> list[asyncpg.Record]:
    """A tenant's keys oldest first, strictly after ``after`` in (createdAt, keyId) order; never the
    secret."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT key_id, name, created_at, last_used_at FROM api_keys WHERE tenant_id = $1"
        " AND ($2::timestamptz IS NULL OR (created_at, key_id) > ($2, $3::text))"
        " ORDER BY created_at, key_id LIMIT $4",
        tenant_id,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return rows


async def delete_api_key(conn: asyncpg.Connection, *, tenant_id: str, key_id: str) -> bool:
    """Delete one of the tenant's keys; False if it has no such key."""
    status: str = await conn.execute(
        "DELETE FROM api_keys WHERE tenant_id = $1 AND key_id = $2", tenant_id, key_id
    )
    return status.endswith(" 1")
