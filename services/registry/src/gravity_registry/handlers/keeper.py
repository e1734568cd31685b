"""The keeper: a background task in every registry copy that keeps each RingCentral connection alive.

Each connection has ``next_check_at``; a copy takes a due connection with ``SELECT … FOR UPDATE SKIP
LOCKED`` and holds that row lock while it talks to RingCentral, so two copies never work on the same
connection (and never renew twice), while different connections are kept by whichever copy is free. API
calls on the same connection wait for the lock.

A check: make sure the access token is valid (refresh, else log in again with the JWT); read the
subscription; renew it when less than ``rc_renew_before_seconds`` remain; recreate it (new id, new token)
when RingCentral reports it ``Blacklisted``/``Suspended``, missing (404) or expired; after a recreation or a
gateway start, backfill from the message store every inbound SMS created since the newest stored one
(minus an overlap) onto the raw topic, where (tenant, rcMessageId) dedup makes it exactly-once. A 429 sets
the next check to ``Retry-After`` from now; other failures retry after ``rc_retry_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from gravity_events import topics
from gravity_events.codec import encode, encode_headers
from gravity_events.ids import format_timestamp, utcnow
from gravity_events.models import RcNotification
from gravity_registry import db
from gravity_registry.handlers.connection import CONNECT_BACKFILL_DELAY, describe, next_check, token_columns
from gravity_registry.handlers.outbox import OutboxPublisher
from gravity_registry.handlers.subscriptions import activate_subscription, deactivate_subscription
from gravity_registry.ringcentral import (
    SMS_EVENT_FILTER,
    RingCentralClient,
    RingCentralError,
    Subscription,
    Tokens,
)
from gravity_registry.settings import Settings
from gravity_webhooks import DecryptionError, SecretBox

__all__ = ["ConnectionKeeper"]

log = logging.getLogger(__name__)

_GONE = ("Blacklisted", "Suspended")


@dataclass
class _Progress:
    """How far a check got: what to show if it fails now, and whether a backfill is still owed."""

    backfill: bool
    status: str = "renewing"


class ConnectionKeeper:
    """The background keeper: :meth:`run` checks due connections until :meth:`stop`."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        outbox: OutboxPublisher,
        box: SecretBox,
        client: RingCentralClient,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._producer = producer
        self._outbox = outbox
        self._box = box
        self._rc = client
        self._wake = asyncio.Event()
        self._stopping = False

    def wake(self) -> None:
        """Look at due connections now."""
        self._wake.set()

    def stop(self) -> None:
        """Finish the connection in hand and return."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Check due connections until stopped. A start may follow downtime: backfill everyone."""
        async with self._pool.acquire() as conn:
            await db.request_backfill_everywhere(conn, now=utcnow())
        while not self._stopping:
            try:
                async with self._pool.acquire() as conn:
                    due = await db.due_connections(conn, now=utcnow(), limit=100)
                for tenant_id in due:
                    if self._stopping:
                        break
                    await self.check(tenant_id)
            except Exception:
                log.exception("the RingCentral keeper failed a round; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._settings.keeper_poll_seconds)
            self._wake.clear()

    async def check(self, tenant_id: str) -> None:
        """One check of one due connection, under its row lock (skipped if another copy has it)."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await db.get_connection(conn, tenant_id=tenant_id, lock="FOR UPDATE SKIP LOCKED")
            now = utcnow()
            if row is None or row["next_check_at"] > now:
                return
            progress = _Progress(backfill=row["backfill_needed"])
            backfill_at = row["connected_at"] + CONNECT_BACKFILL_DELAY
            try:
                sub = await self._keep(conn, row, now, progress)
            except RingCentralError as exc:
                status, retry = self._failure(row, exc, progress.status)
                log.warning(
                    "keeping tenant %s's connection failed (%s): %s", tenant_id, status, describe(exc)
                )
                await self._save_failure(conn, row, status, describe(exc), retry, progress.backfill)
                return
            except DecryptionError:
                why = "stored credentials cannot be decrypted with GRAVITY_SECRET_KEY"
                log.error("tenant %s: %s", tenant_id, why)
                await self._save_failure(
                    conn, row, "error", why, self._settings.rc_check_interval_seconds, progress.backfill
                )
                return
            await db.save_subscription_state(
                conn,
                tenant_id=tenant_id,
                subscription_id=sub.id,
                expires_at=sub.expires_at,
                status="active",
                last_error=None,
                next_check_at=next_check(
                    self._settings,
                    utcnow(),
                    sub.expires_at,
                    backfill_at=backfill_at if progress.backfill else None,
                ),
                backfill_needed=progress.backfill,
            )
        self._outbox.wake()

    async def _keep(
        self, conn: asyncpg.Connection, row: Any, now: datetime, progress: _Progress
    ) -> Subscription:
        """Tokens, then the subscription: read, renew or recreate; then backfill if needed."""
        access = await self._access_token(conn, row, now)
        try:
            sub = await self._read_subscription(row, access)
        except RingCentralError as exc:
            if exc.status != 401:
                raise
            access = await self._access_token(conn, row, now, force=True)  # revoked early
            sub = await self._read_subscription(row, access)
        if sub is None or sub.status in _GONE or sub.expires_at <= now:
            progress.status = "blacklisted" if sub is not None and sub.status in _GONE else "expired"
            log.warning(
                "tenant %s subscription %s is %s: recreating",
                row["tenant_id"],
                row["subscription_id"],
                "missing" if sub is None else sub.status,
            )
            sub = await self._recreate(conn, row, access)
            progress.backfill = True
        elif sub.expires_at - now < timedelta(seconds=self._settings.rc_renew_before_seconds):
            sub = await self._rc.renew_subscription(row["server_url"], access, sub.id)
            log.info("renewed subscription %s until %s", sub.id, format_timestamp(sub.expires_at))
        if progress.backfill and now - row["connected_at"] >= CONNECT_BACKFILL_DELAY:
            await self._backfill(conn, row, access, sub.id)
            progress.backfill = False
        return sub

    async def _save_failure(
        self, conn: asyncpg.Connection, row: Any, status: str, why: str, retry: float, backfill: bool
    ) -> None:
        await db.save_subscription_state(
            conn,
            tenant_id=row["tenant_id"],
            subscription_id=row["subscription_id"],
            expires_at=row["expires_at"],
            status=status,
            last_error=why,
            next_check_at=utcnow() + timedelta(seconds=retry),
            backfill_needed=backfill,
        )

    def _failure(self, row: Any, exc: RingCentralError, observed: str) -> tuple[str, float]:
        """The status to show and the seconds until the next try.

        ``observed`` is what the check had found when it failed (``renewing`` unless the subscription
        was found blacklisted or expired).
        """
        retry = self._settings.rc_retry_seconds
        if exc.status == 429 or (exc.status == 503 and exc.retry_after is not None):
            shown = observed if observed != "renewing" else row["status"]
            return shown, exc.retry_after if exc.retry_after is not None else retry
        if exc.status in (400, 401) and exc.code in (
            "invalid_grant",
            "invalid_client",
            "unauthorized_client",
        ):
            return "error", retry  # the credentials themselves were refused
        if observed == "renewing" and row["expires_at"] <= utcnow():
            return "expired", retry
        return observed, retry

    async def _access_token(
        self, conn: asyncpg.Connection, row: Any, now: datetime, *, force: bool = False
    ) -> str:
        """A valid access token: the stored one, else refreshed, else a new login with the JWT."""
        margin = timedelta(seconds=self._settings.rc_token_margin_seconds)
        if not force and row["access_expires_at"] - now > margin:
            return self._box.decrypt(row["access_token_enc"])
        server, client_id = row["server_url"], row["client_id"]
        client_secret = self._box.decrypt(row["client_secret_enc"])
        tokens: Tokens | None = None
        refresh_ok = row["refresh_expires_at"] is None or row["refresh_expires_at"] > now
        if row["refresh_token_enc"] and refresh_ok:
            try:
                refresh = self._box.decrypt(row["refresh_token_enc"])
                tokens = await self._rc.refresh(server, client_id, client_secret, refresh)
            except RingCentralError as exc:
                if exc.status is None or exc.status == 429 or exc.status >= 500:
                    raise
                log.info(
                    "refreshing tenant %s's token failed (%s); logging in again",
                    row["tenant_id"],
                    describe(exc),
                )
        if tokens is None:
            jwt = self._box.decrypt(row["jwt_enc"])
            tokens = await self._rc.login_with_jwt(server, client_id, client_secret, jwt)
        await db.save_tokens(conn, tenant_id=row["tenant_id"], **token_columns(self._box, tokens))
        return tokens.access_token

    async def _read_subscription(self, row: Any, access: str) -> Subscription | None:
        try:
            return await self._rc.get_subscription(row["server_url"], access, row["subscription_id"])
        except RingCentralError as exc:
            if exc.status == 404:
                return None
            raise

    async def _recreate(self, conn: asyncpg.Connection, row: Any, access: str) -> Subscription:
        """A new subscription (new id, new token) in place of the old one, which is deleted."""
        token = secrets.token_urlsafe(32)
        sub = await self._rc.create_subscription(
            row["server_url"],
            access,
            address=self._settings.webhook_address,
            verification_token=token,
            expires_in=self._settings.rc_subscription_expires_in,
        )
        tenant_id = row["tenant_id"]
        await activate_subscription(conn, tenant_id=tenant_id, subscription_id=sub.id, token=token)
        await deactivate_subscription(conn, subscription_id=row["subscription_id"])
        with contextlib.suppress(RingCentralError):
            await self._rc.delete_subscription(row["server_url"], access, row["subscription_id"])
        return sub

    async def _backfill(self, conn: asyncpg.Connection, row: Any, access: str, subscription_id: str) -> int:
        """Append every inbound SMS since the newest stored one (minus an overlap) to the raw topic."""
        tenant_id = row["tenant_id"]
        newest = await db.latest_message_time(conn, tenant_id=tenant_id)
        overlap = timedelta(seconds=self._settings.rc_backfill_overlap_seconds)
        since = newest - overlap if newest is not None else row["connected_at"]
        futures = []
        async for record in self._rc.inbound_sms_since(row["server_url"], access, since):
            rc_id = str(record.get("id", ""))
            if not rc_id:
                continue
            now = utcnow()
            event = RcNotification(
                tenant_id=tenant_id,
                subscription_id=subscription_id,
                rc_message_id=rc_id,
                received_at=now,
                source="backfill",
                notification={
                    "uuid": f"backfill-{rc_id}",
                    "event": SMS_EVENT_FILTER,
                    "timestamp": format_timestamp(now),
                    "subscriptionId": subscription_id,
                    "body": record,
                },
            )
            futures.append(
                await self._producer.send(
                    topics.RC_RAW, encode(event), key=rc_id.encode(), headers=encode_headers(event)
                )
            )
        await asyncio.gather(*futures)
        if futures:
            log.info("backfilled %d messages for tenant %s since %s", len(futures), tenant_id, since)
        return len(futures)
