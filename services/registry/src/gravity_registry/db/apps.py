"""Apps: webhook URL, disabled flag and signing secrets (encrypted by the caller)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

__all__ = [
    "APP_COLUMNS",
    "count_apps",
    "delete_app",
    "disable_app",
    "get_app",
    "insert_app",
    "list_apps",
    "update_app",
]

APP_COLUMNS = (
    "app_id, tenant_id, name, webhook_url, disabled, signing_secret_enc, previous_secret_enc,"
    " previous_expires_at, created_at, updated_at"
)
"""Every column of an app row, as the queries return it."""


async def insert_app(
    conn: asyncpg.Connection,
    *,
    app_id: str,
    tenant_id: str,
    name: str,
    webhook_url: str | None,
    signing_secret_enc: str,
    now: datetime,
) -> asyncpg.Record:
    """Insert an app; return its row."""
    row: asyncpg.Record = await conn.fetchrow(
        f"INSERT INTO apps (app_id, tenant_id, name, webhook_url, signing_secret_enc, created_at, updated_at)"  # noqa: S608
        f" VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING {APP_COLUMNS}",
        app_id,
        tenant_id,
        name,
        webhook_url,
        signing_secret_enc,
        now,
    )
    return row


async def list_apps(conn: asyncpg.Connection, *, tenant_id: str) -> list[asyncpg.Record]:
    """A tenant's apps, oldest first."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {APP_COLUMNS} FROM apps WHERE tenant_id = $1 ORDER BY created_at, app_id",  # noqa: S608
        tenant_id,
    )
    return rows


async def count_apps(conn: asyncpg.Connection, *, tenant_id: str) -> int:
    """How many apps the tenant has."""
    count: int = await conn.fetchval("SELECT count(*) FROM apps WHERE tenant_id = $1", tenant_id)
    return count


async def get_app(
    conn: asyncpg.Connection, *, tenant_id: str, app_id: str, for_update: bool = False
) -> asyncpg.Record | None:
    """One of the tenant's apps (another tenant's id finds nothing)."""
    lock = " FOR UPDATE" if for_update else ""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {APP_COLUMNS} FROM apps WHERE tenant_id = $1 AND app_id = $2{lock}",  # noqa: S608
        tenant_id,
        app_id,
    )
    return row


async def update_app(
    conn: asyncpg.Connection,
    *,
    tenant_id: str,
    app_id: str,
    name: str,
    webhook_url: str | None,
    disabled: bool,
    signing_secret_enc: str,
    previous_secret_enc: str | None,
    previous_expires_at: datetime | None,
    now: datetime,
) -> asyncpg.Record:
    """Write every mutable column of one of the tenant's apps (the caller holds its row lock); return the
    row."""
    row: asyncpg.Record = await conn.fetchrow(
        "UPDATE apps SET name = $3, webhook_url = $4, disabled = $5, signing_secret_enc = $6,"  # noqa: S608
        " previous_secret_enc = $7, previous_expires_at = $8, updated_at = $9"
        f" WHERE tenant_id = $1 AND app_id = $2 RETURNING {APP_COLUMNS}",
        tenant_id,
        app_id,
        name,
        webhook_url,
        disabled,
        signing_secret_enc,
        previous_secret_enc,
        previous_expires_at,
        now,
    )
    return row


async def delete_app(conn: asyncpg.Connection, *, tenant_id: str, app_id: str) -> bool:
    """Delete one of the tenant's apps; False if there was none."""
    status: str = await conn.execute(
        "DELETE FROM apps WHERE tenant_id = $1 AND app_id = $2", tenant_id, app_id
    )
    return status.endswith(" 1")


async def disable_app(
    conn: asyncpg.Connection, *, tenant_id: str, app_id: str, decided_at: datetime
) -> asyncpg.Record | None:
    """Mark one of the tenant's apps disabled unless it was changed after fanout decided; return the row
    if changed."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "UPDATE apps SET disabled = true, updated_at = now()"  # noqa: S608 - constant column list
        " WHERE tenant_id = $1 AND app_id = $2 AND NOT disabled AND updated_at <= $3"
        f" RETURNING {APP_COLUMNS}",
        tenant_id,
        app_id,
        decided_at,
    )
    return row
