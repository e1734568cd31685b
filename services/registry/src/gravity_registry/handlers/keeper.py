"""The keeper: a background task in every registry copy that keeps each RingCentral connection alive.

Each connection has ``next_check_at``. A copy claims a due connection by moving its ``next_check_at`` a
lease ahead (one ``UPDATE … WHERE next_check_at <= now``: only one copy wins, so two copies never work on
the same connection and never renew twice), talks to RingCentral with no transaction open and no row
locked, then records the outcome in a short transaction that writes only if the connection is still the
one it started from (same ``connected_at`` and subscription id): a connection replaced or removed by the
API meanwhile is left alone, and a subscription the check created for it is deleted again. A check that
dies is retried when its lease ends. Up to ``rc_keeper_concurrency`` connections are checked at once.

A check: make sure the access token is valid (refresh, else log in again with the JWT); read the
subscription; renew it when less than ``rc_renew_before_seconds`` remain; recreate it (new id, new token)
when RingCentral reports it ``Blacklisted``/``Suspended``, missing (404) or expired; after a connect, a
recreation or a gateway start, backfill from the message store every inbound SMS created since the
tenant's newest stored one (minus an overlap; since the connection time if it has none) onto the raw
topic, where (tenant, rcMessageId) dedup makes it exactly-once.

With metrics, each finished check counts once in ``gravity_registry_keeper_checks_total`` by what it did
(``error`` if it failed, else ``recreated``, ``renewed``, ``token_refreshed`` or ``ok``, the first that
applies; a check whose connection changed meanwhile is not counted), and every round of the loop sets
``gravity_registry_connections`` per status from the database, so connects and disconnects through the
API show within a poll.

Whatever one tenant's server does — refuse, time out, trickle, answer nonsense or too much, page forever —
ends that tenant's check only, within ``rc_check_deadline_seconds``: the failure is the connection's
``lastError`` and its next check is backed off (``rc_retry_seconds`` doubling per failure in a row, up
to ``rc_retry_max_seconds``, or ``Retry-After`` if longer), and the round goes on with the others. A
subscription id RingCentral answers with must be the connection's own (renew, read) or no tenant's yet
(recreate); another tenant's mapping is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from gravity_events.ids import format_timestamp, utcnow
from gravity_registry import db
from gravity_registry.db.connections import claim_connection, save_check
from gravity_registry.handlers.backfill import backfill
from gravity_registry.handlers.connection import (
    CONNECT_BACKFILL_DELAY,
    backoff_seconds,
    describe,
    next_check,
    token_columns,
)
from gravity_registry.handlers.keeper_check import NotCallable, Progress, Superseded
from gravity_registry.handlers.outbox import OutboxPublisher
from gravity_registry.handlers.subscriptions import (
    SubscriptionTaken,
    activate_subscription,
    deactivate_subscription,
)
from gravity_registry.ringcentral import (
    PagingLimitReached,
    RingCentralClient,
    RingCentralError,
    Subscription,
    Tokens,
    server_url_problem,
)
from gravity_registry.settings import Settings
from gravity_service.metrics import RegistryMetrics
from gravity_webhooks import DecryptionError, SecretBox

__all__ = ["ConnectionKeeper"]

log = logging.getLogger(__name__)

_GONE = ("Blacklisted", "Suspended")
_LEASE_MARGIN = timedelta(seconds=30)
_REFUSED_GRANTS = ("invalid_grant", "invalid_client", "unauthorized_client")


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
        metrics: RegistryMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._pool = pool
        self._producer = producer
        self._outbox = outbox
        self._box = box
        self._rc = client
        self._wake = asyncio.Event()
        self._stopping = False
        # failed checks in a row per tenant, for the back-off (per copy; reset by a success or a connect)
        self._failures: dict[str, tuple[datetime, int]] = {}

    def wake(self) -> None:
        """Look at due connections now."""
        self._wake.set()

    def stop(self) -> None:
        """Finish the connections in hand and return."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Check due connections until stopped. A start may follow downtime: backfill everyone.

        Up to ``rc_keeper_concurrency`` checks run at once, each started as soon as a slot is free: a
        slow server holds one slot for at most a check's deadline, never the whole round."""
        async with self._pool.acquire() as conn:
            await db.request_backfill_everywhere(conn, now=utcnow())
        in_flight: dict[str, asyncio.Task[None]] = {}

        def finished(task: asyncio.Task[None]) -> None:
            in_flight.pop(task.get_name(), None)
            self._wake.set()  # a slot is free

        try:
            while not self._stopping:
                free = self._settings.rc_keeper_concurrency - len(in_flight)
                if free > 0:
                    try:
                        async with self._pool.acquire() as conn:
                            due = await db.due_connections(conn, now=utcnow(), limit=100)
                            await self._count_connections(conn)
                    except Exception:
                        log.exception("the RingCentral keeper could not list due connections; retrying")
                        due = []
                    for tenant_id in [t for t in due if t not in in_flight][:free]:
                        task = asyncio.create_task(self._guarded_check(tenant_id), name=tenant_id)
                        in_flight[tenant_id] = task
                        task.add_done_callback(finished)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._settings.keeper_poll_seconds)
                self._wake.clear()
        finally:
            if in_flight:
                await asyncio.gather(*in_flight.values(), return_exceptions=True)

    async def _count_connections(self, conn: asyncpg.Connection) -> None:
        """Set the per-status gauge from the database (a status with no connection shows 0)."""
        if self._metrics is None:
            return
        counts = await db.connection_counts(conn)
        for status in self._metrics.CONNECTION_STATUSES:
            self._metrics.connections.labels(status).set(counts.get(status, 0))

    def _count_check(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.keeper_checks.labels(outcome).inc()

    async def _guarded_check(self, tenant_id: str) -> None:
        try:
            await self.check(tenant_id)
        except Exception:
            log.exception("checking tenant %s's RingCentral connection failed", tenant_id)

    async def check(self, tenant_id: str) -> None:
        """One check of one due connection (skipped if it is not due or another copy claimed it)."""
        now = utcnow()
        lease = timedelta(seconds=self._settings.rc_check_deadline_seconds) + _LEASE_MARGIN
        async with self._pool.acquire() as conn:
            row = await claim_connection(conn, tenant_id=tenant_id, now=now, until=now + lease)
        if row is None:
            return
        progress = Progress(
            subscription_id=row["subscription_id"],
            expires_at=row["expires_at"],
            backfill=row["backfill_needed"],
        )
        why: str | None = None
        status, retry_after = progress.status, None
        try:
            async with asyncio.timeout(self._settings.rc_check_deadline_seconds):
                await self._keep(row, now, progress)
        except Superseded:
            log.info(
                "tenant %s's connection changed during its check; the check's outcome is dropped", tenant_id
            )
            self._failures.pop(tenant_id, None)
        except SubscriptionTaken:
            why = "RingCentral answered with a subscription id that belongs to another tenant"
            progress.created = None  # not this tenant's to delete
            status = progress.status
        except RingCentralError as exc:
            why, retry_after = describe(exc), exc.retry_after
            status = self._status_after(row, exc, progress.status)
        except TimeoutError:
            why = f"the check did not finish within {self._settings.rc_check_deadline_seconds:g} s"
            status = self._shown(row, progress.status)
        except DecryptionError:
            why, status = "stored credentials cannot be decrypted with GRAVITY_SECRET_KEY", "error"
        except Exception as exc:
            log.exception("checking tenant %s's connection failed unexpectedly", tenant_id)
            why, status = f"internal error ({type(exc).__name__})", self._shown(row, progress.status)
        else:
            self._failures.pop(tenant_id, None)
            self._count_check(progress.outcome())
        if why is not None:
            self._count_check("error")
        if progress.created is not None:
            await self._discard_created(row, progress, progress.created[0])
        if why is not None:
            await self._save_failure(row, progress, status, why, retry_after)
        self._outbox.wake()

    # -- the check -----------------------------------------------------------------------------

    async def _keep(self, row: Any, now: datetime, progress: Progress) -> None:
        """Tokens, then the subscription: read, renew or recreate; record it; then backfill if owed."""
        if (problem := self._server_problem(row["server_url"])) is not None:
            raise NotCallable(f"RingCentral was not called: {problem}", status=None)
        access = progress.access = await self._access_token(row, now, progress)
        try:
            sub = await self._read_subscription(row, access)
        except RingCentralError as exc:
            if exc.status != 401:
                raise
            access = progress.access = await self._access_token(row, now, progress, force=True)  # revoked
            sub = await self._read_subscription(row, access)
        if sub is None or sub.status in _GONE or sub.expires_at <= now:
            progress.status = "blacklisted" if sub is not None and sub.status in _GONE else "expired"
            log.warning(
                "tenant %s subscription %s is %s: recreating",
                row["tenant_id"],
                row["subscription_id"],
                "missing" if sub is None else sub.status,
            )
            token = secrets.token_urlsafe(32)
            sub = await self._rc.create_subscription(
                row["server_url"],
                access,
                address=self._settings.webhook_address,
                verification_token=token,
                expires_in=self._settings.rc_subscription_expires_in,
            )
            progress.created, progress.recreated = (sub, token), True
        elif sub.expires_at - now < timedelta(seconds=self._settings.rc_renew_before_seconds):
            sub = self._same_subscription(
                row, await self._rc.renew_subscription(row["server_url"], access, sub.id)
            )
            progress.renewed = True
            log.info("renewed subscription %s until %s", sub.id, format_timestamp(sub.expires_at))
        await self._record(row, progress, sub)
        backfill_at = row["connected_at"] + CONNECT_BACKFILL_DELAY
        if progress.backfill and utcnow() >= backfill_at:
            try:
                await backfill(
                    self._pool,
                    self._producer,
                    self._rc,
                    self._settings,
                    row,
                    access,
                    progress.subscription_id,
                )
            except PagingLimitReached:
                progress.backfill = False  # what RingCentral listed is in; the limit is shown as lastError
                raise
            progress.backfill = False
            await self._record(row, progress, sub)

    async def _record(self, row: Any, progress: Progress, sub: Subscription) -> None:
        """Store the subscription found, renewed or created (and the tokens obtained) in one short
        transaction, if the connection is still the one the check started from."""
        tenant_id = row["tenant_id"]
        created = progress.created
        now = utcnow()
        backfill_at = row["connected_at"] + CONNECT_BACKFILL_DELAY
        async with self._pool.acquire() as conn, conn.transaction():
            if created is not None:
                new, token = created
                await activate_subscription(conn, tenant_id=tenant_id, subscription_id=new.id, token=token)
                if new.id != progress.subscription_id:
                    await deactivate_subscription(
                        conn, subscription_id=progress.subscription_id, tenant_id=tenant_id
                    )
                progress.backfill = True
            saved = await save_check(
                conn,
                tenant_id=tenant_id,
                connected_at=row["connected_at"],
                checked_subscription_id=progress.subscription_id,
                subscription_id=sub.id,
                expires_at=sub.expires_at,
                status="active",
                last_error=None,
                next_check_at=next_check(
                    self._settings,
                    now,
                    sub.expires_at,
                    backfill_at=max(backfill_at, now) if progress.backfill else None,
                ),
                backfill_needed=progress.backfill,
                tokens=self._unsaved_tokens(progress),
            )
            if not saved:
                raise Superseded
        replaced = progress.subscription_id
        progress.subscription_id, progress.expires_at = sub.id, sub.expires_at
        progress.status, progress.tokens_saved, progress.created = "active", True, None
        if created is not None and replaced != sub.id:
            with contextlib.suppress(RingCentralError):
                await self._rc.delete_subscription(row["server_url"], progress.access, replaced)

    async def _save_failure(
        self, row: Any, progress: Progress, status: str, why: str, retry_after: float | None
    ) -> None:
        tenant_id = row["tenant_id"]
        connected_at, count = self._failures.get(tenant_id, (row["connected_at"], 0))
        count = count + 1 if connected_at == row["connected_at"] else 1
        self._failures[tenant_id] = (row["connected_at"], count)
        retry = backoff_seconds(self._settings, count, retry_after)
        log.warning(
            "keeping tenant %s's connection failed (%s; next try in %.1f s): %s",
            tenant_id,
            status,
            retry,
            why,
        )
        async with self._pool.acquire() as conn:
            saved = await save_check(
                conn,
                tenant_id=tenant_id,
                connected_at=row["connected_at"],
                checked_subscription_id=progress.subscription_id,
                subscription_id=progress.subscription_id,
                expires_at=progress.expires_at,
                status=status,
                last_error=why,
                next_check_at=utcnow() + timedelta(seconds=retry),
                backfill_needed=progress.backfill,
                tokens=self._unsaved_tokens(progress),
            )
        if not saved:
            log.info(
                "tenant %s's connection changed during its check; its failure is not recorded", tenant_id
            )

    async def _discard_created(self, row: Any, progress: Progress, sub: Subscription) -> None:
        """Delete at RingCentral a subscription this check created but did not store."""
        progress.created = None
        with contextlib.suppress(RingCentralError):
            await asyncio.wait_for(
                self._rc.delete_subscription(row["server_url"], progress.access, sub.id),
                self._settings.rc_call_deadline_seconds,
            )

    def _unsaved_tokens(self, progress: Progress) -> dict[str, Any] | None:
        if progress.tokens is None or progress.tokens_saved:
            return None
        return token_columns(self._box, progress.tokens)

    def _server_problem(self, server_url: str) -> str | None:
        return server_url_problem(
            server_url, production=self._settings.production, allowed_hosts=self._settings.rc_allowed_host_set
        )

    @staticmethod
    def _shown(row: Any, observed: str) -> str:
        return observed if observed != "renewing" else row["status"]

    def _status_after(self, row: Any, exc: RingCentralError, observed: str) -> str:
        """The status to show after ``exc``. ``observed`` is what the check had found when it failed
        (``renewing`` unless the subscription was found blacklisted or expired, ``active`` once it was
        stored)."""
        if isinstance(exc, NotCallable):
            return "error"
        if exc.status == 429 or (exc.status == 503 and exc.retry_after is not None):
            return self._shown(row, observed)
        if exc.status in (400, 401) and exc.code in _REFUSED_GRANTS:
            return "error"  # the credentials themselves were refused
        if observed == "renewing" and row["expires_at"] <= utcnow():
            return "expired"
        return observed

    @staticmethod
    def _same_subscription(row: Any, sub: Subscription) -> Subscription:
        """RingCentral's answer about the connection's subscription must be about that subscription."""
        if sub.id != row["subscription_id"]:
            raise RingCentralError(
                "RingCentral answered with a different subscription than the one asked about", status=200
            )
        return sub

    async def _access_token(self, row: Any, now: datetime, progress: Progress, *, force: bool = False) -> str:
        """A valid access token: the stored one (or one this check obtained), else refreshed, else a new
        login with the JWT."""
        margin = timedelta(seconds=self._settings.rc_token_margin_seconds)
        if not force:
            if progress.tokens is not None:
                return progress.tokens.access_token
            if row["access_expires_at"] - now > margin:
                return self._box.decrypt(row["access_token_enc"])
        server, client_id = row["server_url"], row["client_id"]
        client_secret = self._box.decrypt(row["client_secret_enc"])
        if progress.tokens is not None:
            refresh_token, refresh_expires = progress.tokens.refresh_token, progress.tokens.refresh_expires_at
        else:
            enc = row["refresh_token_enc"]
            refresh_token = self._box.decrypt(enc) if enc else None
            refresh_expires = row["refresh_expires_at"]
        tokens: Tokens | None = None
        if refresh_token and (refresh_expires is None or refresh_expires > now):
            try:
                tokens = await self._rc.refresh(server, client_id, client_secret, refresh_token)
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
        progress.tokens, progress.tokens_saved = tokens, False
        return tokens.access_token

    async def _read_subscription(self, row: Any, access: str) -> Subscription | None:
        try:
            sub = await self._rc.get_subscription(row["server_url"], access, row["subscription_id"])
        except RingCentralError as exc:
            if exc.status == 404:
                return None
            raise
        return self._same_subscription(row, sub)
