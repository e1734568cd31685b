"""What the registry does, as plain async functions over a pool and a producer.

Every change that other services must learn goes through the outbox in the same transaction as the
change itself; :class:`OutboxPublisher` appends it to the change stream and forgets it only after the
broker acknowledged. The projection turns raw notifications into exactly one stored message per
(tenant, rcMessageId) and publishes ``sms_inbound`` for each stored message not yet published.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from gravity_events import topics
from gravity_events.codec import RECEIVED_AT_HEADER, encode, encode_headers
from gravity_events.ids import (
    TENANT_ID_RE,
    format_timestamp,
    message_id_for,
    new_app_id,
    new_key_id,
    new_tenant_id,
    utcnow,
)
from gravity_events.kafka import Envelope
from gravity_events.models import (
    ApiKeyActive,
    ApiKeyRevoked,
    AppDeleted,
    AppEndpointDisabled,
    AppUpserted,
    DeliveryAttempt,
    DeliveryRequested,
    EncryptedSecret,
    Event,
    RcNotification,
    SmsInbound,
    SubscriptionActive,
    SubscriptionRemoved,
)
from gravity_events.ringcentral import NotificationError, extract_inbound_sms
from gravity_registry import db
from gravity_registry.errors import Conflict, NotFound, Unauthorized, ValidationFailed
from gravity_webhooks import (
    DeliveryClient,
    SecretBox,
    WebhookUrlError,
    new_signing_secret,
    validate_webhook_url,
)

__all__ = [
    "Caller",
    "OutboxPublisher",
    "activate_subscription",
    "app_json",
    "authenticate",
    "checked_webhook_url",
    "create_api_key",
    "create_app",
    "create_tenant",
    "deactivate_subscription",
    "delete_app",
    "delivery_json",
    "enqueue_event",
    "message_json",
    "project_batch",
    "project_deliveries",
    "request_delivery",
    "revoke_api_key",
    "rotate_secret",
    "send_test_webhook",
    "sha256_hex",
    "sms_event",
    "stamp_in_gateway_order",
    "update_app",
]

log = logging.getLogger(__name__)

API_KEY_PREFIX = "gsk_"
_TOUCH_EVERY = timedelta(minutes=1)


def sha256_hex(secret: str) -> str:
    """Hex SHA-256: how API keys and verification tokens are stored and published."""
    return hashlib.sha256(secret.encode()).hexdigest()


def message_json(row: Any) -> dict[str, Any]:
    """The contract's message object for a stored row."""
    return {
        "messageId": row["message_id"],
        "direction": row["direction"],
        "from": row["from_number"],
        "to": row["to_number"],
        "body": row["body"],
        "status": row["status"],
        "rcMessageId": row["rc_message_id"],
        "tenantId": row["tenant_id"],
        "timestamp": format_timestamp(row["timestamp"]),
        "receivedAt": format_timestamp(row["received_at"]),
    }


async def enqueue_event(conn: asyncpg.Connection, topic: str, key: str, event: Event) -> None:
    """Queue ``event`` for the change stream in the caller's transaction (the outbox)."""
    await db.enqueue_outbox(conn, topic=topic, key=key, value=encode(event), headers=encode_headers(event))


# -- tenants and API keys ---------------------------------------------------------------------------


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


async def create_api_key(pool: asyncpg.Pool, *, tenant_id: str, name: str) -> dict[str, Any]:
    """Another key for the tenant (shown once)."""
    async with pool.acquire() as conn, conn.transaction():
        return await _new_key(conn, tenant_id, name)


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
            await db.touch_api_key(conn, key_id=row["key_id"], now=now)
    return Caller(tenant_id=row["tenant_id"], key_id=row["key_id"])


# -- subscriptions (development helper until the RingCentral connect flow) ---------------------------


async def activate_subscription(
    conn: asyncpg.Connection, *, tenant_id: str, subscription_id: str, token: str
) -> None:
    """Record a subscription and queue its token hash for ingest (in the caller's transaction)."""
    digest = sha256_hex(token)
    await db.upsert_subscription(
        conn, subscription_id=subscription_id, tenant_id=tenant_id, token_sha256=digest, created_at=utcnow()
    )
    event = SubscriptionActive(
        subscription_id=subscription_id, tenant_id=tenant_id, verification_token_sha256=digest
    )
    await enqueue_event(conn, topics.SUBSCRIPTIONS, subscription_id, event)


async def deactivate_subscription(conn: asyncpg.Connection, *, subscription_id: str) -> bool:
    """Forget a subscription and queue its removal (ingest refuses it from then on); False if unknown."""
    tenant_id = await db.delete_subscription(conn, subscription_id=subscription_id)
    if tenant_id is None:
        return False
    event = SubscriptionRemoved(subscription_id=subscription_id, tenant_id=tenant_id)
    await enqueue_event(conn, topics.SUBSCRIPTIONS, subscription_id, event)
    return True


async def put_subscription(pool: asyncpg.Pool, *, tenant_id: str, subscription_id: str, token: str) -> None:
    """Record a subscription and publish its token hash for ingest (the development endpoint)."""
    async with pool.acquire() as conn, conn.transaction():
        if await db.get_tenant(conn, tenant_id=tenant_id) is None:
            raise NotFound("no such tenant")
        await activate_subscription(conn, tenant_id=tenant_id, subscription_id=subscription_id, token=token)


async def remove_subscription(pool: asyncpg.Pool, *, subscription_id: str) -> None:
    """Forget a subscription; ingest refuses its notifications from then on."""
    async with pool.acquire() as conn, conn.transaction():
        if not await deactivate_subscription(conn, subscription_id=subscription_id):
            raise NotFound("no such subscription")


# -- the outbox ------------------------------------------------------------------------------------


class OutboxPublisher:
    """Appends queued change records to their topics, oldest first, then deletes them.

    One publisher at a time across registry copies (a transaction-scoped advisory lock), so records of
    one key keep their order. ``wake()`` after a commit makes propagation immediate; a periodic sweep
    covers other copies' commits and earlier failures.
    """

    def __init__(self, pool: asyncpg.Pool, producer: AIOKafkaProducer, *, sweep_seconds: float) -> None:
        self._pool = pool
        self._producer = producer
        self._sweep = sweep_seconds
        self._wake = asyncio.Event()
        self._stopping = False

    def wake(self) -> None:
        """Something was committed: publish it now."""
        self._wake.set()

    def stop(self) -> None:
        """Finish the round in hand and return."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Publish until stopped."""
        while not self._stopping:
            try:
                while await self.publish_pending():
                    pass
            except Exception:
                log.exception("outbox publishing failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._sweep)
            self._wake.clear()

    async def publish_pending(self, limit: int = 500) -> int:
        """One round: publish up to ``limit`` records; return how many."""
        async with self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", db.OUTBOX_LOCK):
                return 0
            rows = await db.pending_outbox(conn, limit=limit)
            if not rows:
                return 0
            futures = [
                await self._producer.send(
                    r["topic"],
                    bytes(r["value"]),
                    key=r["key"].encode(),
                    headers=[(k, v.encode()) for k, v in orjson.loads(r["headers"])],
                )
                for r in rows
            ]
            await asyncio.gather(*futures)
            await db.delete_outbox(conn, ids=[r["id"] for r in rows])
            return len(rows)


# -- the projection ----------------------------------------------------------------------------------


def _clean(text: str) -> str:
    """PostgreSQL text cannot hold NUL; keep everything else exactly."""
    return text.replace("\x00", "\ufffd")


def sms_event(row: Any) -> SmsInbound:
    """The ``sms_inbound`` event of a stored message."""
    return SmsInbound(
        message_id=row["message_id"],
        from_=row["from_number"],
        to=row["to_number"],
        body=row["body"],
        rc_message_id=row["rc_message_id"],
        tenant_id=row["tenant_id"],
        timestamp=row["timestamp"],
    )


async def _dead_letter(producer: AIOKafkaProducer, envelope: Envelope, reason: str) -> None:
    log.error(
        "dead-lettering %s partition=%s offset=%s: %s",
        envelope.topic,
        envelope.partition,
        envelope.offset,
        reason,
    )
    headers = [
        *encode_headers(envelope.event),
        ("dlq-origin-topic", envelope.topic.encode()),
        ("dlq-origin-partition", str(envelope.partition).encode()),
        ("dlq-origin-offset", str(envelope.offset).encode()),
        ("dlq-error", reason[:1000].encode()),
    ]
    key = envelope.key.encode() if envelope.key is not None else None
    await producer.send_and_wait(topics.DEAD_LETTER, encode(envelope.event), key=key, headers=headers)


async def project_batch(
    batch: Sequence[Envelope], *, pool: asyncpg.Pool, producer: AIOKafkaProducer, lock_timeout: float
) -> None:
    """Store each raw notification once and publish ``sms_inbound`` for what is not yet published.
    Notifications of tenants this registry does not know are skipped.

    Holding the batch's tenants' order locks (other registry copies project other raw partitions of the
    same tenants): 1. in one transaction, insert the batch (ON CONFLICT DO NOTHING on (tenant,
    rcMessageId)), read back which of its messages are unpublished (new ones, and ones a crash left
    unpublished) and give each a receivedAt after the tenant's last published message; 2. publish them in
    that order and wait for every acknowledgement; 3. mark them published. So each tenant's stream is in
    the gateway's (receivedAt, messageId) order, the order a resume with ``since`` reads in, and a row is
    committed before its event exists. The consumer commits offsets only after this returns. A crash
    anywhere repeats at most step 2 for some messages: never a second row. A lock not granted within
    ``lock_timeout`` seconds fails the batch before anything is stored; the consumer tries it again.
    """
    rows: dict[tuple[str, str], db.MessageRow] = {}
    origins: dict[tuple[str, str], Envelope] = {}
    for envelope in batch:
        event = envelope.event
        if not isinstance(event, RcNotification):
            continue
        try:
            if not TENANT_ID_RE.match(event.tenant_id):
                raise NotificationError(f"tenant id {event.tenant_id!r} is not valid")
            body = event.notification.get("body")
            if not isinstance(body, dict):
                raise NotificationError("notification has no body object")
            sms = extract_inbound_sms(body)
        except NotificationError as exc:
            await _dead_letter(producer, envelope, str(exc))
            continue
        key = (event.tenant_id, sms.rc_message_id)
        origins.setdefault(key, envelope)
        rows.setdefault(
            key,
            db.MessageRow(
                tenant_id=event.tenant_id,
                rc_message_id=sms.rc_message_id,
                message_id=message_id_for(event.tenant_id, sms.rc_message_id),
                from_number=_clean(sms.from_number),
                to_number=_clean(sms.to_number),
                body=_clean(sms.text),
                timestamp=sms.creation_time,
                received_at=event.received_at,
                conversation_id=_clean(sms.conversation_id) if sms.conversation_id is not None else None,
            ),
        )
    if not rows:
        return
    tenant_ids = sorted({tenant for tenant, _ in rows})
    async with pool.acquire() as conn:
        known = await db.known_tenants(conn, tenant_ids=tenant_ids)
        if len(known) < len(tenant_ids):
            # a tenant deleted since ingest accepted it, or another deployment's sharing the raw topic:
            # there is no one to store it for, and publishing it would send it on to no one's apps
            foreign = [key for key in rows if key[0] not in known]
            log.info(
                "skipped %d notification(s) of tenants this registry does not know: %s",
                len(foreign),
                ", ".join(sorted({tenant for tenant, _ in foreign})[:5]),
            )
            for key in foreign:
                del rows[key], origins[key]
            if not rows:
                return
            tenant_ids = sorted(known)
        try:
            await db.lock_tenants(conn, tenant_ids=tenant_ids, timeout_seconds=lock_timeout)
        except asyncpg.LockNotAvailableError:
            log.warning(
                "a tenant order lock of this batch was not granted within %.1f s (another registry copy holds"
                " it while it publishes); nothing stored, the batch is tried again",
                lock_timeout,
            )
            raise
        try:
            try:
                pending = await _store(conn, rows, tenant_ids)
            except asyncpg.DataError:  # a value PostgreSQL refuses: find it, so it cannot block everyone
                await _drop_unstorable(conn, producer, rows, origins)
                pending = await _store(conn, rows, tenant_ids)
            futures = []
            for row, received_at in pending:  # committed first: a resume's history read sees what is live
                event = sms_event(row)
                stamp = format_timestamp(received_at).encode()
                headers = [*encode_headers(event), (RECEIVED_AT_HEADER, stamp)]
                futures.append(
                    await producer.send(
                        topics.SMS_INBOUND, encode(event), key=row["tenant_id"].encode(), headers=headers
                    )
                )
            await asyncio.gather(*futures)
            if pending:
                await db.mark_published(conn, keys=[(r["tenant_id"], r["rc_message_id"]) for r, _ in pending])
        finally:
            await db.unlock_tenants(conn, tenant_ids=tenant_ids)


async def _store(
    conn: asyncpg.Connection, rows: dict[tuple[str, str], db.MessageRow], tenant_ids: list[str]
) -> list[tuple[Any, datetime]]:
    """One transaction (the caller holds the tenants' order locks): insert, read back what is unpublished,
    stamp it after each tenant's last published message. Returns the rows to publish with their stamps."""
    async with conn.transaction():
        last = await db.last_published(conn, tenant_ids=tenant_ids)
        await db.insert_messages(conn, rows=list(rows.values()))
        pending = stamp_in_gateway_order(await db.unpublished_messages(conn, keys=list(rows)), last)
        moved = [(r["tenant_id"], r["rc_message_id"], t) for r, t in pending if t != r["received_at"]]
        if moved:
            await db.restamp_messages(conn, stamps=moved)
    return pending


async def _drop_unstorable(
    conn: asyncpg.Connection,
    producer: AIOKafkaProducer,
    rows: dict[tuple[str, str], db.MessageRow],
    origins: dict[tuple[str, str], Envelope],
) -> None:
    """Try each row alone, rolled back either way; dead-letter and drop the ones PostgreSQL refuses."""
    for key, row in list(rows.items()):
        trial = conn.transaction()
        await trial.start()
        try:
            await db.insert_messages(conn, rows=[row])
        except asyncpg.DataError as exc:
            await _dead_letter(producer, origins[key], f"not storable: {exc}")
            del rows[key]
        finally:
            await trial.rollback()


_ONE_MS = timedelta(milliseconds=1)


def stamp_in_gateway_order(
    pending: Sequence[Any], last: dict[str, tuple[datetime, str]]
) -> list[tuple[Any, datetime]]:
    """Each row with the receivedAt it is published under, so a tenant's stream is in the gateway's order.

    ``pending`` is in (receivedAt, messageId) order; ``last`` holds each tenant's latest published position.
    A row whose ingest stamp is not after that position (another ingest copy stamped it earlier, another
    raw partition delivered it later, or a crashed copy stored it without publishing) takes the position's
    millisecond when its messageId sorts after the position's, else the next millisecond. Receipt times stay
    ingest's wherever they already follow the stream, and a tenant's clock never runs faster than 1 ms per
    message beyond them.
    """
    last = dict(last)
    stamped = []
    for row in pending:
        at, message_id = row["received_at"], row["message_id"]
        prev = last.get(row["tenant_id"])
        if prev is not None and (at, message_id) <= prev:
            at = prev[0] if message_id > prev[1] else prev[0] + _ONE_MS
        last[row["tenant_id"]] = (at, message_id)
        stamped.append((row, at))
    return stamped


# -- apps ------------------------------------------------------------------------------------------

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


def _live_secrets(row: Any, now: datetime) -> tuple[EncryptedSecret, ...]:
    """The current secret, and the previous one while its rotation overlap lasts (ciphertexts)."""
    live = [EncryptedSecret(ciphertext=row["signing_secret_enc"])]
    if row["previous_secret_enc"] and row["previous_expires_at"] and row["previous_expires_at"] > now:
        live.append(
            EncryptedSecret(ciphertext=row["previous_secret_enc"], expires_at=row["previous_expires_at"])
        )
    return tuple(live)


async def _publish_app(conn: asyncpg.Connection, row: Any) -> None:
    event = AppUpserted(
        app_id=row["app_id"],
        tenant_id=row["tenant_id"],
        webhook_url=row["webhook_url"],
        disabled=row["disabled"],
        signing_secrets=_live_secrets(row, utcnow()),
        updated_at=row["updated_at"],
    )
    await enqueue_event(conn, topics.APPS, row["app_id"], event)


async def checked_webhook_url(url: str | None, *, production: bool) -> str | None:
    """``url`` if it follows the contract's webhookUrl rules; else 422 naming the field."""
    if url is None:
        return None
    try:
        return await validate_webhook_url(url, production=production)
    except WebhookUrlError as exc:
        raise ValidationFailed(str(exc), [{"field": "webhookUrl", "message": str(exc)}]) from exc


async def create_app(
    pool: asyncpg.Pool, box: SecretBox, *, tenant_id: str, name: str, webhook_url: str | None
) -> dict[str, Any]:
    """A new app with a fresh signing secret, shown this once."""
    secret = new_signing_secret()
    async with pool.acquire() as conn, conn.transaction():
        row = await db.insert_app(
            conn,
            app_id=new_app_id(),
            tenant_id=tenant_id,
            name=name,
            webhook_url=webhook_url,
            signing_secret_enc=box.encrypt(secret),
            now=utcnow(),
        )
        await _publish_app(conn, row)
    return {**app_json(row), "signingSecret": secret}


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
        row = await db.get_app(conn, tenant_id=tenant_id, app_id=app_id, for_update=True)
        if row is None:
            raise NotFound("no such app")
        row = await db.update_app(
            conn,
            app_id=app_id,
            name=row["name"] if name is _UNSET else name,
            webhook_url=row["webhook_url"] if webhook_url is _UNSET else webhook_url,
            disabled=row["disabled"] if disabled is _UNSET else disabled,
            signing_secret_enc=row["signing_secret_enc"],
            previous_secret_enc=row["previous_secret_enc"],
            previous_expires_at=row["previous_expires_at"],
            now=utcnow(),
        )
        await _publish_app(conn, row)
    return app_json(row)


async def rotate_secret(pool: asyncpg.Pool, box: SecretBox, *, tenant_id: str, app_id: str) -> dict[str, Any]:
    """A new signing secret; the old one keeps signing (second signature) for 24 hours."""
    secret, now = new_signing_secret(), utcnow()
    async with pool.acquire() as conn, conn.transaction():
        row = await db.get_app(conn, tenant_id=tenant_id, app_id=app_id, for_update=True)
        if row is None:
            raise NotFound("no such app")
        row = await db.update_app(
            conn,
            app_id=app_id,
            name=row["name"],
            webhook_url=row["webhook_url"],
            disabled=row["disabled"],
            signing_secret_enc=box.encrypt(secret),
            previous_secret_enc=row["signing_secret_enc"],
            previous_expires_at=now + ROTATION_OVERLAP,
            now=now,
        )
        await _publish_app(conn, row)
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
    keys = [box.decrypt(s.ciphertext) for s in _live_secrets(row, utcnow())]
    message_id, body = test_payload(tenant_id)
    result = await client.deliver(row["webhook_url"], body, message_id=message_id, secrets=keys)
    return {"ok": result.ok, "status": result.status, "body": result.body}


# -- the delivery log ------------------------------------------------------------------------------


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
            row = await db.disable_app(conn, app_id=event.app_id, decided_at=event.disabled_at)
            if row is not None:
                log.warning(
                    "app %s disabled: its endpoint failed since %s", event.app_id, event.failing_since
                )
                await _publish_app(conn, row)
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
