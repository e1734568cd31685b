"""RingCentral connections for the API: connect (or replace), read, disconnect.

One connection per tenant. Connecting exchanges the JWT for tokens, creates a WebHook subscription to
inbound SMS (RingCentral handshakes with ingest during that call; ingest answers any handshake), stores
everything encrypted, and publishes the subscription's token hash on the subscriptions stream, all or
nothing: if storing fails the new subscription is deleted at RingCentral again. Replacing a connection
deletes the old subscription at RingCentral after the new one is stored. No RingCentral call is made while a
transaction is open: the calls come first, then one short transaction stores the outcome.

In production a ``serverUrl`` must be ``https`` on one of ``GRAVITY_RC_ALLOWED_HOSTS``; anything else is
refused (422) before any connection is attempted. A subscription id RingCentral answers with that is
already another tenant's is refused (502) and nothing is stored.

:mod:`gravity_registry.handlers.keeper` keeps connections alive; the helpers here (token columns, when to
check next, remote deletion) are the ones both use.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from gravity_events.ids import format_timestamp, utcnow
from gravity_registry import db
from gravity_registry.errors import NotFound, UpstreamFailed, ValidationFailed
from gravity_registry.handlers.outbox import OutboxPublisher
from gravity_registry.handlers.subscriptions import (
    SubscriptionTaken,
    activate_subscription,
    deactivate_subscription,
)
from gravity_registry.ringcentral import RingCentralClient, RingCentralError, Tokens, server_url_problem
from gravity_registry.settings import Settings
from gravity_webhooks import DecryptionError, SecretBox

__all__ = [
    "CONNECT_BACKFILL_DELAY",
    "Connections",
    "backoff_seconds",
    "check_server_url",
    "connection_json",
    "delete_remote",
    "describe",
    "next_check",
    "token_columns",
]

log = logging.getLogger(__name__)

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


_LAST_ERROR_LIMIT = 500


def describe(exc: RingCentralError) -> str:
    """RingCentral's error in one line (its code appended, at most 500 characters), as logged and stored
    in ``lastError``."""
    code = f" {exc.code}" if exc.code else ""
    return " ".join(f"{exc}{code}".split())[:_LAST_ERROR_LIMIT]


def check_server_url(settings: Settings, server_url: str) -> None:
    """Raise 422 ``validation_error`` for a ``serverUrl`` the gateway will not call (in production: not
    https, or not one of ``GRAVITY_RC_ALLOWED_HOSTS``)."""
    problem = server_url_problem(
        server_url, production=settings.production, allowed_hosts=settings.rc_allowed_host_set
    )
    if problem is not None:
        raise ValidationFailed(problem, [{"field": "serverUrl", "message": problem}])


def backoff_seconds(settings: Settings, failures: int, retry_after: float | None = None) -> float:
    """How long after the ``failures``-th failed check in a row to try again: ``rc_retry_seconds``
    doubled per failure up to ``rc_retry_max_seconds``, or RingCentral's ``Retry-After`` if longer
    (itself at most a day)."""
    exponent = min(max(failures - 1, 0), 40)
    delay = min(settings.rc_retry_seconds * 2.0**exponent, settings.rc_retry_max_seconds)
    return max(delay, retry_after) if retry_after is not None else delay


def next_check(
    settings: Settings, now: datetime, expires_at: datetime, *, backfill_at: datetime | None = None
) -> datetime:
    """When the keeper looks at a connection next: the regular interval, renewal time or an owed backfill,
    whichever comes first, but not sooner than a second (or the interval, if shorter) from now."""
    renew_at = expires_at - timedelta(seconds=settings.rc_renew_before_seconds)
    regular = now + timedelta(seconds=settings.rc_check_interval_seconds)
    due = min(regular, renew_at) if backfill_at is None else min(regular, renew_at, backfill_at)
    return max(now + timedelta(seconds=min(1.0, settings.rc_check_interval_seconds)), due)


def token_columns(box: SecretBox, tokens: Tokens) -> dict[str, Any]:
    """The connection columns that hold ``tokens``, encrypted."""
    return {
        "access_token_enc": box.encrypt(tokens.access_token),
        "access_expires_at": tokens.access_expires_at,
        "refresh_token_enc": box.encrypt(tokens.refresh_token) if tokens.refresh_token else None,
        "refresh_expires_at": tokens.refresh_expires_at,
    }


async def delete_remote(client: RingCentralClient, box: SecretBox, row: Any) -> None:
    """Delete a subscription at RingCentral with the row's credentials; log, never raise."""
    try:
        access = box.decrypt(row["access_token_enc"])
        if row["access_expires_at"] <= utcnow():
            jwt, secret = box.decrypt(row["jwt_enc"]), box.decrypt(row["client_secret_enc"])
            access = (
                await client.login_with_jwt(row["server_url"], row["client_id"], secret, jwt)
            ).access_token
        await client.delete_subscription(row["server_url"], access, row["subscription_id"])
    except RingCentralError as exc:
        log.warning(
            "deleting subscription %s at RingCentral failed: %s", row["subscription_id"], describe(exc)
        )
    except DecryptionError:
        log.warning(
            "deleting subscription %s at RingCentral skipped: its credentials cannot be decrypted",
            row["subscription_id"],
        )


class Connections:
    """Connect, read and disconnect a tenant's RingCentral account (the API's side)."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        outbox: OutboxPublisher,
        box: SecretBox,
        client: RingCentralClient,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._outbox = outbox
        self._box = box
        self._rc = client

    async def connect(
        self, *, tenant_id: str, server_url: str, client_id: str, client_secret: str, jwt: str
    ) -> dict[str, Any]:
        """Create (or replace) the tenant's connection; 422 for a refused ``serverUrl``, 502 with
        RingCentral's error if it refuses (or answers with another tenant's subscription id)."""
        server_url = server_url.rstrip("/")
        check_server_url(self._settings, server_url)
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
            log.warning("connecting tenant %s failed: %s", tenant_id, describe(exc))
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
                    **token_columns(self._box, tokens),
                    subscription_id=sub.id,
                    expires_at=sub.expires_at,
                    connected_at=now,
                    next_check_at=next_check(
                        self._settings, now, sub.expires_at, backfill_at=now + CONNECT_BACKFILL_DELAY
                    ),
                )
                await activate_subscription(conn, tenant_id=tenant_id, subscription_id=sub.id, token=token)
                if old is not None and old["subscription_id"] != sub.id:
                    await deactivate_subscription(
                        conn, subscription_id=old["subscription_id"], tenant_id=tenant_id
                    )
        except SubscriptionTaken as exc:
            # The id is another tenant's: deleting it at RingCentral is not this tenant's business.
            log.warning(
                "connecting tenant %s failed: RingCentral answered with another tenant's subscription id",
                tenant_id,
            )
            raise UpstreamFailed(
                "RingCentral answered with a subscription id that belongs to another connection",
                {"ringcentralStatus": 200, "ringcentralError": None},
            ) from exc
        except BaseException:
            with contextlib.suppress(RingCentralError):
                await self._rc.delete_subscription(server_url, tokens.access_token, sub.id)
            raise
        self._outbox.wake()
        if old is not None and old["subscription_id"] != sub.id:
            await delete_remote(self._rc, self._box, old)
        return connection_json(row)

    async def disconnect(self, *, tenant_id: str) -> None:
        """Forget the connection (ingest refuses its events within seconds), then delete it remotely."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await db.get_connection(conn, tenant_id=tenant_id, lock="FOR UPDATE")
            if row is None:
                raise NotFound("no RingCentral connection")
            await db.delete_connection(conn, tenant_id=tenant_id)
            await deactivate_subscription(conn, subscription_id=row["subscription_id"], tenant_id=tenant_id)
        self._outbox.wake()
        await delete_remote(self._rc, self._box, row)

    async def get(self, *, tenant_id: str) -> dict[str, Any]:
        """The connection as it is now."""
        async with self._pool.acquire() as conn:
            row = await db.get_connection(conn, tenant_id=tenant_id)
        if row is None:
            raise NotFound("no RingCentral connection")
        return connection_json(row)
