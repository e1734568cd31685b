"""RingCentral connections: connect, disconnect, and the keeper that keeps them alive.

One connection per tenant. Connecting exchanges the JWT for tokens, creates a WebHook subscription to
inbound SMS (RingCentral handshakes with ingest during that call; ingest answers any handshake), stores
everything encrypted, and publishes the subscription's token hash on the subscriptions stream, all or
nothing: if storing fails the new subscription is deleted at RingCentral again.

The keeper is a background task in every registry copy. Each connection has ``next_check_at``; a copy
takes a due connection with ``SELECT … FOR UPDATE SKIP LOCKED`` and holds that row lock while it talks
to RingCentral, so two copies never work on the same connection (and never renew twice), while different
connections are kept by whichever copy is free. API calls on the same connection wait for the lock.

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
from gravity_registry.errors import NotFound, UpstreamFailed
from gravity_registry.handlers import OutboxPublisher, activate_subscription, deactivate_subscription
from gravity_registry.ringcentral import (
    SMS_EVENT_FILTER,
    RingCentralClient,
    RingCentralError,
    Subscription,
    Tokens,
)
from gravity_registry.settings import Settings
from gravity_webhooks import DecryptionError, SecretBox

__all__ = ["ConnectionKeeper", "connection_json"]

log = logging.getLogger(__name__)

_GONE = ("Blacklisted", "Suspended")

CONNECT_BACKFILL_DELAY = timedelta(seconds=5)
"""After a connect, the keeper backfills from the connection time once, this much later: an event that
RingCentral sent before ingest had learnt the new subscription (and was refused) is fetched then."""


def connection_json(row: Any) -> dict[str, Any]:
    """The contract's connection object, plus ``lastError`` (never a secret)."""
    return {
        "status": row["status"],
        "subscriptionId": row["subscription_id"],
        "expiresAt": format_timestamp(row["expires_at"]),
        "serverUrl": row["server_url"],
        "connectedAt": format_timestamp(row["connected_at"]),
        "lastError": row["last_error"],
    }


@dataclass
class _Progress:
    """How far a check got: what to show if it fails now, and whether a backfill is still owed."""

    backfill: bool
    status: str = "renewing"


def _why(exc: RingCentralError) -> str:
    code = f" {exc.code}" if exc.code else ""
    return f"{exc}{code}"


class ConnectionKeeper:
    """Connect/disconnect for the API, and :meth:`run` for the background keeper."""

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

    # -- the API -------------------------------------------------------------------------------

    async def connect(
        self, *, tenant_id: str, server_url: str, client_id: str, client_secret: str, jwt: str
    ) -> dict[str, Any]:
        """Create (or replace) the tenant's connection; 502 with RingCentral's error if it refuses."""
        server_url = server_url.rstrip("/")
        try:
            tokens = await self._rc.login_with_jwt(server_url, client_id, client_secret, jwt)
            token = secrets.token_urlsafe(32)
            sub = await self._rc.create_subscription(
                server_url,
                tokens.access_token,
                address=self._settings.webhook_address,
                verification_token=token,
                expires_in=self._settings.rc_subscription_expires_in,
            )
        except RingCentralError as exc:
            log.warning("connecting tenant %s failed: %s", tenant_id, _why(exc))
            raise UpstreamFailed(f"RingCentral refused the connection: {exc}", exc.details()) from exc
        now = utcnow()
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                old = await db.get_connection(conn, tenant_id=tenant_id, lock="FOR UPDATE")
                row = await db.upsert_connection(
                    conn,
                    tenant_id=tenant_id,
                    server_url=server_url,
                    client_id=client_id,
                    client_secret_enc=self._box.encrypt(client_secret),
                    jwt_enc=self._box.encrypt(jwt),
                    **self._token_columns(tokens),
                    subscription_id=sub.id,
                    expires_at=sub.expires_at,
                    connected_at=now,
                    next_check_at=self._next_check(now, sub.expires_at),
                )
                await activate_subscription(conn, tenant_id=tenant_id, subscription_id=sub.id, token=token)
                if old is not None and old["subscription_id"] != sub.id:
                    await deactivate_subscription(conn, subscription_id=old["subscription_id"])
        except BaseException:
            with contextlib.suppress(RingCentralError):
                await self._rc.delete_subscription(server_url, tokens.access_token, sub.id)
            raise
        self._outbox.wake()
        if old is not None and old["subscription_id"] != sub.id:
            await self._delete_remote(old)
        return connection_json(row)

    async def disconnect(self, *, tenant_id: str) -> None:
        """Forget the connection (ingest refuses its events within seconds), then delete it remotely."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await db.get_connection(conn, tenant_id=tenant_id, lock="FOR UPDATE")
            if row is None:
                raise NotFound("no RingCentral connection")
            await db.delete_connection(conn, tenant_id=tenant_id)
            await deactivate_subscription(conn, subscription_id=row["subscription_id"])
        self._outbox.wake()
        await self._delete_remote(row)

    async def get(self, *, tenant_id: str) -> dict[str, Any]:
        """The connection as it is now."""
        async with self._pool.acquire() as conn:
            row = await db.get_connection(conn, tenant_id=tenant_id)
        if row is None:
            raise NotFound("no RingCentral connection")
        return connection_json(row)

    # -- the keeper ------------------------------------------------------------------------------

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
                log.warning("keeping tenant %s's connection failed (%s): %s", tenant_id, status, _why(exc))
                await self._save_failure(conn, row, status, _why(exc), retry, progress.backfill)
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
                next_check_at=self._next_check(
                    utcnow(), sub.expires_at, backfill_at=backfill_at if progress.backfill else None
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

    # -- pieces ----------------------------------------------------------------------------------

    def _next_check(
        self, now: datetime, expires_at: datetime, *, backfill_at: datetime | None = None
    ) -> datetime:
        renew_at = expires_at - timedelta(seconds=self._settings.rc_renew_before_seconds)
        regular = now + timedelta(seconds=self._settings.rc_check_interval_seconds)
        due = min(regular, renew_at) if backfill_at is None else min(regular, renew_at, backfill_at)
        return max(now + timedelta(seconds=min(1.0, self._settings.rc_check_interval_seconds)), due)

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

    def _token_columns(self, tokens: Tokens) -> dict[str, Any]:
        return {
            "access_token_enc": self._box.encrypt(tokens.access_token),
            "access_expires_at": tokens.access_expires_at,
            "refresh_token_enc": self._box.encrypt(tokens.refresh_token) if tokens.refresh_token else None,
            "refresh_expires_at": tokens.refresh_expires_at,
        }

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
                    "refreshing tenant %s's token failed (%s); logging in again", row["tenant_id"], _why(exc)
                )
        if tokens is None:
            jwt = self._box.decrypt(row["jwt_enc"])
            tokens = await self._rc.login_with_jwt(server, client_id, client_secret, jwt)
        await db.save_tokens(conn, tenant_id=row["tenant_id"], **self._token_columns(tokens))
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

    async def _delete_remote(self, row: Any) -> None:
        """Delete a subscription at RingCentral with the row's credentials; log, never raise."""
        try:
            access = self._box.decrypt(row["access_token_enc"])
            if row["access_expires_at"] <= utcnow():
                jwt, secret = self._box.decrypt(row["jwt_enc"]), self._box.decrypt(row["client_secret_enc"])
                access = (
                    await self._rc.login_with_jwt(row["server_url"], row["client_id"], secret, jwt)
                ).access_token
            await self._rc.delete_subscription(row["server_url"], access, row["subscription_id"])
        except RingCentralError as exc:
            log.warning(
                "deleting subscription %s at RingCentral failed: %s", row["subscription_id"], _why(exc)
            )

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
