"""The current state of every change stream's entities, read to republish them.

Each read locks the rows it returns ``FOR SHARE`` until the caller's transaction ends: a change in flight
(its row locked, its outbox record queued but not committed) is waited for and its new state read, so a
republished record is never older than the change's own record, which the outbox publishes before it.
"""

from __future__ import annotations

import asyncpg

from gravity_registry.db.apps import APP_COLUMNS

__all__ = ["all_api_keys", "all_apps", "all_subscriptions"]


async def all_subscriptions(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Every subscription ingest should accept: subscription_id, tenant_id, verification_token_sha256."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT subscription_id, tenant_id, verification_token_sha256 FROM subscriptions"
        " ORDER BY subscription_id FOR SHARE"
    )
    return rows


async def all_api_keys(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Every API key: key_id, tenant_id, key_sha256."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT key_id, tenant_id, key_sha256 FROM api_keys ORDER BY key_id FOR SHARE"
    )
    return rows


async def all_apps(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Every app, with the columns the apps stream carries."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {APP_COLUMNS} FROM apps ORDER BY app_id FOR SHARE"  # noqa: S608 - constant column list
    )
    return rows
