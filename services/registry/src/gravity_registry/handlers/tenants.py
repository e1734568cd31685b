"""Tenants and API keys: creation (a key is shown once, stored as its hash), revocation, authentication."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg

from gravity_events import topics
from gravity_events.ids import format_timestamp, new_key_id, new_tenant_id, utcnow
from gravity_events.models import ApiKeyActive, ApiKeyRevoked
from gravity_registry import db
from gravity_registry.errors import NotFound, Unauthorized
from gravity_registry.handlers.cursors import decode_position, encode_position
from gravity_registry.handlers.outbox import enqueue_event

__all__ = [
    "API_KEY_PREFIX",
    "Caller",
    "authenticate",
    "create_api_key",
    "create_tenant",
    "list_api_keys",
    "list_tenants",
    "revoke_api_key",
    "sha256_hex",
]

API_KEY_PREFIX = "gsk_"
_TOUCH_EVERY = timedelta(minutes=1)


def sha256_hex(secret: str) -> str:
    """Hex SHA-256: how API keys and verification tokens are stored and published."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a tenant API call is made by."""

    tenant_id: str
    key_id: str


async def _new_key(conn: asyncpg.Connection, tenant_id: str, name: str) -> dict[str, Any]:
    key_id, secret, now = new_key_id(), API_KEY_PREFIX + secrets.token_urlsafe(32), utcnow()
    digest = sha256_hex(secret)
    await db.create_api_key(
        conn, key_id=key_id, tenant_id=tenant_id, name=name, key_sha256=digest, created_at=now
    )
    await enqueue_event(
        conn, topics.API_KEYS, key_id, ApiKeyActive(key_id=key_id, tenant_id=tenant_id, key_sha256=digest)
    )
    return {"keyId": key_id, "name": name, "apiKey": secret, "createdAt": format_timestamp(now)}


async def create_tenant(pool: asyncpg.Pool, *, name: str) -> dict[str, Any]:
    """A tenant and its first API key (shown once)."""
    tenant_id, now = new_tenant_id(), utcnow()
    async with pool.acquire() as conn, conn.transaction():
        await db.create_tenant(conn, tenant_id=tenant_id, name=name, created_at=now)
        key = await _new_key(conn, tenant_id, "default")
    return {"tenantId": tenant_id, "name": name, "apiKey": key["apiKey"], "createdAt": format_timestamp(now)}


async def list_tenants(pool: asyncpg.Pool, *, limit: int, cursor: str | None) -> dict[str, Any]:
    """A page of tenants, oldest first, and the cursor of the next page or None (``GET /v1/tenants``)."""
    async with pool.acquire() as conn:
        rows = await db.list_tenants(conn, after=decode_position(cursor) if cursor else None, limit=limit + 1)
    page, more = rows[:limit], len(rows) > limit
    return {
        "tenants": [
            {"tenantId": r["tenant_id"], "name": r["name"], "createdAt": format_timestamp(r["created_at"])}
            for r in page
        ],
        "nextCursor": encode_position(page[-1]["created_at"], page[-1]["tenant_id"]) if more else None,
    }


async def create_api_key(pool: asyncpg.Pool, *, tenant_id: str, name: str) -> dict[str, Any]:
    """Another key for the tenant (shown once)."""
    async with pool.acquire() as conn, conn.transaction():
        return await _new_key(conn, tenant_id, name)


async def list_api_keys(
    pool: asyncpg.Pool, *, tenant_id: str, limit: int, cursor: str | None
) -> dict[str, Any]:
    """A page of the tenant's keys, oldest first, never their secrets, and the cursor of the next page or
    None (``GET /v1/api-keys``)."""
    async with pool.acquire() as conn:
        rows = await db.list_api_keys(
            conn, tenant_id=tenant_id, after=decode_position(cursor) if cursor else None, limit=limit + 1
        )
    page, more = rows[:limit], len(rows) > limit
    return {
        "apiKeys": [
            {
                "keyId": r["key_id"],
                "name": r["name"],
                "createdAt": format_timestamp(r["created_at"]),
                "lastUsedAt": format_timestamp(r["last_used_at"]) if r["last_used_at"] else None,
            }
            for r in page
        ],
        "nextCursor": encode_position(page[-1]["created_at"], page[-1]["key_id"]) if more else None,
    }


async def revoke_api_key(pool: asyncpg.Pool, *, tenant_id: str, key_id: str) -> None:
    """Delete the key and tell every service (realtime closes its sockets)."""
    async with pool.acquire() as conn, conn.transaction():
        if not await db.delete_api_key(conn, tenant_id=tenant_id, key_id=key_id):
            raise NotFound("no such API key")
        await enqueue_event(conn, topics.API_KEYS, key_id, ApiKeyRevoked(key_id=key_id, tenant_id=tenant_id))


async def authenticate(pool: asyncpg.Pool, authorization: str | None) -> Caller:
    """The tenant behind ``Authorization: Bearer <apiKey>``, or :class:`Unauthorized`.

    Keys are looked up by their SHA-256 (the index compares digests, not secrets). ``lastUsedAt`` is
    written at most once a minute per key, not on every request.
    """
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.startswith(API_KEY_PREFIX):
        raise Unauthorized("a valid API key is required: Authorization: Bearer <apiKey>")
    async with pool.acquire() as conn:
        row = await db.find_api_key(conn, key_sha256=sha256_hex(token.strip()))
        if row is None:
            raise Unauthorized("the API key is not valid")
        now = utcnow()
        if row["last_used_at"] is None or now - row["last_used_at"] > _TOUCH_EVERY:
            await db.touch_api_key(conn, tenant_id=row["tenant_id"], key_id=row["key_id"], now=now)
    return Caller(tenant_id=row["tenant_id"], key_id=row["key_id"])
