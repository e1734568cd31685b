"""The delivery log: attempts fanout reports are stored and its disable decisions applied; a tenant reads
an app's attempts and asks for a message to be delivered again."""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from gravity_events import topics
from gravity_events.ids import format_timestamp, utcnow
from gravity_events.kafka import Envelope
from gravity_events.models import AppEndpointDisabled, DeliveryAttempt, DeliveryRequested
from gravity_registry import db
from gravity_registry.errors import Conflict, NotFound, ValidationFailed
from gravity_registry.handlers.apps import publish_app
from gravity_registry.handlers.messages import sms_event
from gravity_registry.handlers.outbox import enqueue_event

__all__ = ["delivery_json", "list_deliveries", "project_deliveries", "request_delivery"]

log = logging.getLogger(__name__)


def delivery_json(row: Any) -> dict[str, Any]:
    """One attempt as ``GET /v1/apps/{appId}/deliveries`` shows it."""
    return {
        "messageId": row["message_id"],
        "appId": row["app_id"],
        "attempt": row["attempt"],
        "status": "succeeded" if row["succeeded"] else "failed",
        "responseCode": row["response_code"],
        "durationMs": row["duration_ms"],
        "error": row["error"],
        "attemptedAt": format_timestamp(row["attempted_at"]),
        "nextAttemptAt": format_timestamp(row["next_attempt_at"]) if row["next_attempt_at"] else None,
    }


def _encode_cursor(row: Any) -> str:
    raw = orjson.dumps([row["attempted_at"].isoformat(), row["message_id"], row["attempt"]])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str, int]:
    try:
        moment, message_id, attempt = orjson.loads(
            base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        )
        at = datetime.fromisoformat(moment)
        if at.tzinfo is None or not isinstance(message_id, str) or not isinstance(attempt, int):
            raise ValueError("bad cursor")
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError) as exc:
        raise ValidationFailed(
            "cursor is not valid", [{"field": "cursor", "message": "use nextCursor as returned"}]
        ) from exc
    return at, message_id, attempt


async def list_deliveries(
    pool: asyncpg.Pool,
    *,
    tenant_id: str,
    app_id: str,
    message_id: str | None,
    succeeded: bool | None,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """One page of the app's attempts, newest first, and the cursor of the next page (or None)."""
    before = _decode_cursor(cursor) if cursor else None
    async with pool.acquire() as conn:
        if await db.get_app(conn, tenant_id=tenant_id, app_id=app_id) is None:
            raise NotFound("no such app")
        rows = await db.list_deliveries(
            conn,
            tenant_id=tenant_id,
            app_id=app_id,
            message_id=message_id,
            succeeded=succeeded,
            before=before,
            limit=limit + 1,
        )
    page, more = rows[:limit], len(rows) > limit
    return {
        "deliveries": [delivery_json(r) for r in page],
        "nextCursor": _encode_cursor(page[-1]) if more else None,
    }


async def project_deliveries(batch: Sequence[Envelope], *, pool: asyncpg.Pool) -> bool:
    """Store reported attempts; apply fanout's disable decisions. True if an app changed."""
    rows = [
        db.DeliveryRow(
            app_id=e.app_id,
            tenant_id=e.tenant_id,
            message_id=e.message_id,
            attempt=e.attempt,
            succeeded=e.succeeded,
            response_code=e.response_code,
            duration_ms=e.duration_ms,
            error=e.error[:2000] if e.error else None,
            attempted_at=e.attempted_at,
            next_attempt_at=e.next_attempt_at,
        )
        for e in (envelope.event for envelope in batch)
        if isinstance(e, DeliveryAttempt)
    ]
    disabled = [envelope.event for envelope in batch if isinstance(envelope.event, AppEndpointDisabled)]
    changed = False
    async with pool.acquire() as conn, conn.transaction():
        if rows:
            await db.insert_deliveries(conn, rows=rows)
        for event in disabled:
            row = await db.disable_app(
                conn, tenant_id=event.tenant_id, app_id=event.app_id, decided_at=event.disabled_at
            )
            if row is not None:
                log.warning(
                    "app %s disabled: its endpoint failed since %s", event.app_id, event.failing_since
                )
                await publish_app(conn, row)
                changed = True
    return changed


async def request_delivery(
    pool: asyncpg.Pool, *, tenant_id: str, app_id: str, message_id: str
) -> dict[str, Any]:
    """Ask fanout to deliver one stored message to one app now (``…/deliveries/{messageId}/retry``)."""
    now = utcnow()
    async with pool.acquire() as conn, conn.transaction():
        app = await db.get_app(conn, tenant_id=tenant_id, app_id=app_id)
        if app is None:
            raise NotFound("no such app")
        message = await db.get_message(conn, tenant_id=tenant_id, message_id=message_id)
        if message is None:
            raise NotFound("no such message")
        if not app["webhook_url"]:
            raise Conflict("the app has no webhookUrl to deliver to")
        request = DeliveryRequested(
            app_id=app_id, tenant_id=tenant_id, event=sms_event(message), requested_at=now
        )
        await enqueue_event(conn, topics.DELIVERY_REQUESTS, app_id, request)
    return {
        "appId": app_id,
        "messageId": message_id,
        "status": "queued",
        "requestedAt": format_timestamp(now),
    }
