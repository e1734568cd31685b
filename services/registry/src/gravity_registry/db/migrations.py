"""The schema: the package's ``migrations/*.sql``, applied once each, one migrator at a time."""

from __future__ import annotations

from importlib import resources

import asyncpg

__all__ = ["apply_migrations"]

_MIGRATION_LOCK = 0x6772_6176  # "grav": one migrator at a time across registry copies


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
