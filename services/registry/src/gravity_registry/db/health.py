"""The one query readiness needs."""

from __future__ import annotations

import asyncpg

__all__ = ["ping"]


async def ping(conn: asyncpg.Connection) -> None:
    """A round trip to PostgreSQL (raises what asyncpg raises when it cannot be reached)."""
    await conn.fetchval("SELECT 1")
