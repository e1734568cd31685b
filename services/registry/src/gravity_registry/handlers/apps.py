"""Apps: create, change, rotate the signing secret, delete, send a test webhook. Every change is
republished on the apps stream (with the live secrets' ciphertexts) in the same transaction."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson

from gravity_events import topics
from gravity_events.ids import format_timestamp, new_app_id, utcnow
from gravity_events.models import AppDeleted, AppUpserted, EncryptedSecret
from gravity_registry import db
from gravity_registry.errors import Conflict, NotFound, ValidationFailed
from gravity_registry.handlers.outbox import enqueue_event
from gravity_webhooks import (
    DeliveryClient,
    SecretBox,
    WebhookUrlError,
    new_signing_secret,
    validate_webhook_url,
)

__all__ = [
    "ROTATION_OVERLAP",
    "app_event",
    "app_json",
    "checked_webhook_url",
    "create_app",
    "delete_app",
    "get_app",
    "list_apps",
    "live_secrets",
    "publish_app",
    "rotate_secret",
    "send_test_webhook",
    "test_payload",
    "update_app",
]

ROTATION_OVERLAP = timedelta(hours=24)
_UNSET: Any = object()


def app_json(row: Any) -> dict[str, Any]:
    """The contract's app object (never a secret)."""
    return {
        "appId": row["app_id"],
        "tenantId": row["tenant_id"],
        "name": row["name"],
        "webhookUrl": row["webhook_url"],
        "disabled": row["disabled"],
        "createdAt": format_timestamp(row["created_at"]),
        "updatedAt": format_timestamp(row["updated_at"]),
    }


def live_secrets(row: Any, now: datetime) -> tuple[EncryptedSecret, ...]:
    """The current secret, and the previous one while its rotation overlap lasts (ciphertexts)."""
    live = [EncryptedSecret(ciphertext=row["signing_secret_enc"])]
    if row["previous_secret_enc"] and row["previous_expires_at"] and row["previous_expires_at"] > now:
        live.append(
            EncryptedSecret(ciphertext=row["previous_secret_enc"], expires_at=row["previous_expires_at"])
        )
    return tuple(live)


def app_event(row: Any, now: datetime) -> AppUpserted:
    """The apps stream's record of an app as it is at ``now`` (URL, disabled, live secrets' ciphertexts)."""
    return AppUpserted(
        app_id=row["app_id"],
        tenant_id=row["tenant_id"],
        webhook_url=row["webhook_url"],
        disabled=row["disabled"],
        signing_secrets=live_secrets(row, now),
        updated_at=row["updated_at"],
    )


async def _locked_app(conn: asyncpg.Connection, *, tenant_id: str, app_id: str) -> asyncpg.Record:
    """The tenant's app, its row locked for this transaction; NotFound when there is none."""
    row = await db.get_app(conn, tenant_id=tenant_id, app_id=app_id, for_update=True)
    if row is None:
        raise NotFound("no such app")
    return row


async def publish_app(conn: asyncpg.Connection, row: Any) -> None:
    """Queue the app as it now is for fanout, in the caller's transaction."""
    await enqueue_event(conn, topics.APPS, row["app_id"], app_event(row, utcnow()))


async def checked_webhook_url(url: str | None, *, production: bool) -> str | None:
    """``url`` if it follows the contract's webhookUrl rules; else 422 naming the field."""
    if url is None:
        return None
    try:
        return await validate_webhook_url(url, production=production)
    except WebhookUrlError as exc:
        raise ValidationFailed(str(exc), [{"field": "webhookUrl", "message": str(exc)}]) from exc


async def create_app(
    pool: asyncpg.Pool,
    box: SecretBox,
    *,
    tenant_id: str,
    name: str,
    webhook_url: str | None,
    max_apps: int,
) -> dict[str, Any]:
    """A new app with a fresh signing secret, shown this once; :class:`Conflict` when the tenant already
    has ``max_apps`` (counted under the tenant's row lock, so concurrent creations cannot pass it)."""
    secret = new_signing_secret()
    async with pool.acquire() as conn, conn.transaction():
        if not await db.lock_tenant(conn, tenant_id=tenant_id):
            raise NotFound("no such tenant")
        if await db.count_apps(conn, tenant_id=tenant_id) >= max_apps:
            raise Conflict(
                f"the tenant has {max_apps} apps, the most it may have; delete one first",
                {"limit": max_apps},
            )
        row = await db.insert_app(
            conn,
            app_id=new_app_id(),
            tenant_id=tenant_id,
            name=name,
            webhook_url=webhook_url,
            signing_secret_enc=box.encrypt(secret),
            now=utcnow(),
        )
        await publish_app(conn, row)
    return {**app_json(row), "signingSecret": secret}


async def list_apps(pool: asyncpg.Pool, *, tenant_id: str) -> dict[str, Any]:
    """The tenant's apps, oldest first (``GET /v1/apps``): all of them, bounded by the per-tenant cap."""
    async with pool.acquire() as conn:
        rows = await db.list_apps(conn, tenant_id=tenant_id)
    return {"apps": [app_json(r) for r in rows]}


async def get_app(pool: asyncpg.Pool, *, tenant_id: str, app_id: str) -> dict[str, Any]:
    """One of the tenant's apps; another tenant's id is :class:`NotFound` too."""
    async with pool.acquire() as conn:
        row = await db.get_app(conn, tenant_id=tenant_id, app_id=app_id)
    if row is None:
        raise NotFound("no such app")
    return app_json(row)


async def update_app(
    pool: asyncpg.Pool,
    *,
    tenant_id: str,
    app_id: str,
    name: str = _UNSET,
    webhook_url: str | None = _UNSET,
    disabled: bool = _UNSET,
) -> dict[str, Any]:
    """Change any of name, webhookUrl (None removes it), disabled; republish."""
    async with pool.acquire() as conn, conn.transaction():
        row = await _locked_app(conn, tenant_id=tenant_id, app_id=app_id)
        row = await db.update_app(
            conn,
            tenant_id=tenant_id,
            app_id=app_id,
            name=row["name"] if name is _UNSET else name,
            webhook_url=row["webhook_url"] if webhook_url is _UNSET else webhook_url,
            disabled=row["disabled"] if disabled is _UNSET else disabled,
            signing_secret_enc=row["signing_secret_enc"],
            previous_secret_enc=row["previous_secret_enc"],
            previous_expires_at=row["previous_expires_at"],
            now=utcnow(),
        )
        await publish_app(conn, row)
    return app_json(row)


async def rotate_secret(pool: asyncpg.Pool, box: SecretBox, *, tenant_id: str, app_id: str) -> dict[str, Any]:
    """A new signing secret; the old one keeps signing (second signature) for 24 hours."""
    secret, now = new_signing_secret(), utcnow()
    async with pool.acquire() as conn, conn.transaction():
        row = await _locked_app(conn, tenant_id=tenant_id, app_id=app_id)
        row = await db.update_app(
            conn,
            tenant_id=tenant_id,
            app_id=app_id,
            name=row["name"],
            webhook_url=row["webhook_url"],
            disabled=row["disabled"],
            signing_secret_enc=box.encrypt(secret),
            previous_secret_enc=row["signing_secret_enc"],
            previous_expires_at=now + ROTATION_OVERLAP,
            now=now,
        )
        await publish_app(conn, row)
    return {
        **app_json(row),
        "signingSecret": secret,
        "previousSecretExpiresAt": format_timestamp(now + ROTATION_OVERLAP),
    }


async def delete_app(pool: asyncpg.Pool, *, tenant_id: str, app_id: str) -> None:
    """Delete the app; fanout stops delivering to it."""
    async with pool.acquire() as conn, conn.transaction():
        if not await db.delete_app(conn, tenant_id=tenant_id, app_id=app_id):
            raise NotFound("no such app")
        await enqueue_event(conn, topics.APPS, app_id, AppDeleted(app_id=app_id, tenant_id=tenant_id))


def test_payload(tenant_id: str) -> tuple[str, bytes]:
    """A ``"type": "test"`` event in the shape of ``sms_inbound``, with a fresh random messageId."""
    message_id = "msg_" + secrets.token_hex(6)
    body = {
        "type": "test",
        "messageId": message_id,
        "from": "+15550100001",
        "to": "+15550100002",
        "body": "This is a test webhook from Gravity SMS.",
        "rcMessageId": "test",
        "tenantId": tenant_id,
        "timestamp": format_timestamp(utcnow()),
    }
    return message_id, orjson.dumps(body)


async def send_test_webhook(
    pool: asyncpg.Pool, box: SecretBox, client: DeliveryClient, *, tenant_id: str, app_id: str
) -> dict[str, Any]:
    """POST a test event with the real delivery client and report what the endpoint answered."""
    async with pool.acquire() as conn:
        row = await db.get_app(conn, tenant_id=tenant_id, app_id=app_id)
    if row is None:
        raise NotFound("no such app")
    if not row["webhook_url"]:
        raise Conflict("the app has no webhookUrl to test")
    keys = [box.decrypt(s.ciphertext) for s in live_secrets(row, utcnow())]
    message_id, body = test_payload(tenant_id)
    result = await client.deliver(row["webhook_url"], body, message_id=message_id, secrets=keys)
    return {"ok": result.ok, "status": result.status, "body": result.body}
