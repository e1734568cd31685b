"""Every SQL statement of the registry, one function per query (asyncpg).

Functions take the connection first and keyword-only arguments. Transactions are the caller's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

import asyncpg
import orjson

__all__ = [
    "DeliveryRow",
    "MessageRow",
    "apply_migrations",
    "create_api_key",
    "create_tenant",
    "delete_api_key",
    "delete_app",
    "delete_connection",
    "delete_outbox",
    "delete_subscription",
    "disable_app",
    "due_connections",
    "enqueue_outbox",
    "find_api_key",
    "get_app",
    "get_connection",
    "get_message",
    "get_tenant",
    "insert_app",
    "insert_deliveries",
    "insert_messages",
    "last_published",
    "latest_message_time",
    "list_api_keys",
    "list_apps",
    "list_deliveries",
    "list_messages_after",
    "list_messages_before",
    "list_tenants",
    "lock_tenants",
    "mark_published",
    "message_position",
    "pending_outbox",
    "request_backfill_everywhere",
    "restamp_messages",
    "save_subscription_state",
    "save_tokens",
    "touch_api_key",
    "unlock_tenants",
    "unpublished_messages",
    "update_app",
    "upsert_connection",
    "upsert_subscription",
]

_MIGRATION_LOCK = 0x6772_6176  # "grav": one migrator at a time across registry copies
OUTBOX_LOCK = 0x6F75_7462  # "outb": one outbox publisher at a time keeps per-key order
_TENANT_ORDER_LOCK = 0x6F72_6472  # "ordr": with a tenant's key, one projector of that tenant at a time


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


def _int32(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big", signed=True)


def _tenant_lock_keys(tenant_ids: Sequence[str]) -> list[int]:
    """The second key of each tenant's order lock (32 bits of SHA-256), sorted: every copy locks in one
    order, so two copies never wait on each other crosswise. A collision only makes two tenants share."""
    return sorted({_int32(t) for t in tenant_ids})


async def known_tenants(conn: asyncpg.Connection, *, tenant_ids: Sequence[str]) -> set[str]:
    """Which of ``tenant_ids`` exist."""
    rows = await conn.fetch(
        "SELECT tenant_id FROM tenants WHERE tenant_id = ANY($1::text[])", list(tenant_ids)
    )
    return {r["tenant_id"] for r in rows}


async def lock_tenants(
    conn: asyncpg.Connection, *, tenant_ids: Sequence[str], timeout_seconds: float
) -> None:
    """Take the tenants' order locks for this session (held across transactions, released by
    :func:`unlock_tenants`, by the pool's reset of a released connection, or by the session's end).

    Waits at most ``timeout_seconds`` for each; then raises ``asyncpg.LockNotAvailableError`` having
    released what it took.
    """
    await conn.execute("SELECT set_config('lock_timeout', $1, false)", f"{int(timeout_seconds * 1000)}ms")
    try:
        for key in _tenant_lock_keys(tenant_ids):
            await conn.execute("SELECT pg_advisory_lock($1, $2)", _TENANT_ORDER_LOCK, key)
    except asyncpg.LockNotAvailableError:
        await unlock_tenants(conn, tenant_ids=tenant_ids)
        raise
    finally:
        await conn.execute("RESET lock_timeout")


async def unlock_tenants(conn: asyncpg.Connection, *, tenant_ids: Sequence[str]) -> None:
    """Release what :func:`lock_tenants` took."""
    await conn.execute(
        "SELECT pg_advisory_unlock($1, k) FROM unnest($2::int[]) AS k",
        _TENANT_ORDER_LOCK,
        _tenant_lock_keys(tenant_ids),
    )


async def last_published(
    conn: asyncpg.Connection, *, tenant_ids: Sequence[str]
) -> dict[str, tuple[datetime, str]]:
    """Each tenant's latest published message as (receivedAt, messageId); tenants with none are absent."""
    rows = await conn.fetch(
        "SELECT t.tenant_id, p.received_at, p.message_id FROM unnest($1::text[]) AS t(tenant_id)"
        " CROSS JOIN LATERAL (SELECT received_at, message_id FROM messages m"
        "  WHERE m.tenant_id = t.tenant_id AND m.published"
        "  ORDER BY received_at DESC, message_id DESC LIMIT 1) AS p",
        list(tenant_ids),
    )
    return {r["tenant_id"]: (r["received_at"], r["message_id"]) for r in rows}


async def restamp_messages(conn: asyncpg.Connection, *, stamps: Sequence[tuple[str, str, datetime]]) -> None:
    """Set receivedAt of unpublished messages, given as (tenant, rcMessageId, receivedAt)."""
    await conn.execute(
        "UPDATE messages m SET received_at = s.r FROM unnest($1::text[], $2::text[], $3::timestamptz[])"
        " AS s(t, id, r) WHERE m.tenant_id = s.t AND m.rc_message_id = s.id AND NOT m.published",
        [s[0] for s in stamps],
        [s[1] for s in stamps],
        [s[2] for s in stamps],
    )


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
    """Newest first, strictly before ``before`` in (receivedAt, messageId) order.

    Only the filters given become conditions: a generic plan for ``($n IS NULL OR col = $n)`` cannot use the
    sender and recipient indexes.
    """
    where = ["tenant_id = $1"]
    args: list[Any] = [tenant_id]

    def condition(template: str, *values: Any) -> None:
        refs = []
        for value in values:
            args.append(value)
            refs.append(f"${len(args)}")
        where.append(template.format(*refs))

    if direction is not None:
        condition("direction = {0}", direction)
    if before is not None:
        condition("(received_at, message_id) < ({0}::timestamptz, {1}::text)", *before)
    if from_number is not None:
        condition("from_number = {0}", from_number)
    if to_number is not None:
        condition("to_number = {0}", to_number)
    if since is not None:
        condition("received_at >= {0}::timestamptz", since)
    if until is not None:
        condition("received_at < {0}::timestamptz", until)
    args.append(limit)
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE {' AND '.join(where)}"  # noqa: S608 - fixed fragments
        f" ORDER BY received_at DESC, message_id DESC LIMIT ${len(args)}",
        *args,
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


# -- apps -------------------------------------------------------------------------------------------

_APP_COLUMNS = (
    "app_id, tenant_id, name, webhook_url, disabled, signing_secret_enc, previous_secret_enc,"
    " previous_expires_at, created_at, updated_at"
)


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
        f" VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING {_APP_COLUMNS}",
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
        f"SELECT {_APP_COLUMNS} FROM apps WHERE tenant_id = $1 ORDER BY created_at, app_id",  # noqa: S608
        tenant_id,
    )
    return rows


async def get_app(
    conn: asyncpg.Connection, *, tenant_id: str, app_id: str, for_update: bool = False
) -> asyncpg.Record | None:
    """One of the tenant's apps (another tenant's id finds nothing)."""
    lock = " FOR UPDATE" if for_update else ""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {_APP_COLUMNS} FROM apps WHERE tenant_id = $1 AND app_id = $2{lock}",  # noqa: S608
        tenant_id,
        app_id,
    )
    return row


async def update_app(
    conn: asyncpg.Connection,
    *,
    app_id: str,
    name: str,
    webhook_url: str | None,
    disabled: bool,
    signing_secret_enc: str,
    previous_secret_enc: str | None,
    previous_expires_at: datetime | None,
    now: datetime,
) -> asyncpg.Record:
    """Write every mutable column of an app (the caller holds its row lock); return the row."""
    row: asyncpg.Record = await conn.fetchrow(
        "UPDATE apps SET name = $2, webhook_url = $3, disabled = $4, signing_secret_enc = $5,"  # noqa: S608
        " previous_secret_enc = $6, previous_expires_at = $7, updated_at = $8"
        f" WHERE app_id = $1 RETURNING {_APP_COLUMNS}",
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


# -- RingCentral connections --------------------------------------------------------------------------

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


async def latest_message_time(conn: asyncpg.Connection, *, tenant_id: str) -> datetime | None:
    """RingCentral creationTime of the tenant's newest stored message."""
    value: datetime | None = await conn.fetchval(
        'SELECT max("timestamp") FROM messages WHERE tenant_id = $1', tenant_id
    )
    return value


# -- deliveries ---------------------------------------------------------------------------------------

_DELIVERY_COLUMNS = (
    "app_id, tenant_id, message_id, attempt, succeeded, response_code, duration_ms, error, attempted_at,"
    " next_attempt_at"
)


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """One attempt to store."""

    app_id: str
    tenant_id: str
    message_id: str
    attempt: int
    succeeded: bool
    response_code: int | None
    duration_ms: float
    error: str | None
    attempted_at: datetime
    next_attempt_at: datetime | None


async def insert_deliveries(conn: asyncpg.Connection, *, rows: Sequence[DeliveryRow]) -> None:
    """Insert a batch of attempts; ones already stored are left alone."""
    await conn.execute(
        f"INSERT INTO deliveries ({_DELIVERY_COLUMNS})"  # noqa: S608 - constant column list
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::bool[], $6::int[],"
        " $7::float8[], $8::text[], $9::timestamptz[], $10::timestamptz[])"
        " ON CONFLICT DO NOTHING",
        [r.app_id for r in rows],
        [r.tenant_id for r in rows],
        [r.message_id for r in rows],
        [r.attempt for r in rows],
        [r.succeeded for r in rows],
        [r.response_code for r in rows],
        [r.duration_ms for r in rows],
        [r.error for r in rows],
        [r.attempted_at for r in rows],
        [r.next_attempt_at for r in rows],
    )


async def list_deliveries(
    conn: asyncpg.Connection,
    *,
    app_id: str,
    message_id: str | None,
    succeeded: bool | None,
    before: tuple[datetime, str, int] | None,
    limit: int,
) -> list[asyncpg.Record]:
    """An app's attempts, newest first, strictly before ``before`` (attemptedAt, messageId, attempt)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {_DELIVERY_COLUMNS} FROM deliveries"  # noqa: S608 - constant column list
        " WHERE app_id = $1"
        " AND ($2::text IS NULL OR message_id = $2)"
        " AND ($3::bool IS NULL OR succeeded = $3)"
        " AND ($4::timestamptz IS NULL OR (attempted_at, message_id, attempt) < ($4, $5::text, $6::int))"
        " ORDER BY attempted_at DESC, message_id DESC, attempt DESC LIMIT $7",
        app_id,
        message_id,
        succeeded,
        before[0] if before else None,
        before[1] if before else None,
        before[2] if before else None,
        limit,
    )
    return rows


async def disable_app(
    conn: asyncpg.Connection, *, app_id: str, decided_at: datetime
) -> asyncpg.Record | None:
    """Mark the app disabled unless it was changed after fanout decided; return the row if changed."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "UPDATE apps SET disabled = true, updated_at = now()"  # noqa: S608 - constant column list
        f" WHERE app_id = $1 AND NOT disabled AND updated_at <= $2 RETURNING {_APP_COLUMNS}",
        app_id,
        decided_at,
    )
    return row
