"""Subscriptions: the (subscriptionId → tenant, verification-token hash) records ingest checks, published
on the subscriptions stream. The connection flow and the keeper write them; a development endpoint does
too, for local testing without RingCentral.

A subscription id, once mapped to a tenant, is never remapped to another: an id that is already another
tenant's (a misbehaving or hostile RingCentral server can answer with any id) raises
:class:`SubscriptionTaken` and changes nothing, so that tenant's notifications keep being accepted."""

from __future__ import annotations

import asyncpg

from gravity_events import topics
from gravity_events.ids import utcnow
from gravity_events.models import SubscriptionActive, SubscriptionRemoved
from gravity_registry import db
from gravity_registry.errors import Conflict, NotFound
from gravity_registry.handlers.outbox import enqueue_event
from gravity_registry.handlers.tenants import sha256_hex

__all__ = [
    "SubscriptionTaken",
    "activate_subscription",
    "deactivate_subscription",
    "put_subscription",
    "remove_subscription",
]


class SubscriptionTaken(Exception):
    """The subscription id is already mapped to another tenant; nothing was changed."""

    def __init__(self, subscription_id: str) -> None:
        super().__init__(f"subscription {subscription_id[:128]!r} belongs to another tenant")
        self.subscription_id = subscription_id


async def activate_subscription(
    conn: asyncpg.Connection, *, tenant_id: str, subscription_id: str, token: str
) -> None:
    """Record a subscription and queue its token hash for ingest (in the caller's transaction); raise
    :class:`SubscriptionTaken` if the id is another tenant's (roll the transaction back then)."""
    digest = sha256_hex(token)
    mapped = await db.upsert_subscription(
        conn, subscription_id=subscription_id, tenant_id=tenant_id, token_sha256=digest, created_at=utcnow()
    )
    if not mapped:
        raise SubscriptionTaken(subscription_id)
    event = SubscriptionActive(
        subscription_id=subscription_id, tenant_id=tenant_id, verification_token_sha256=digest
    )
    await enqueue_event(conn, topics.SUBSCRIPTIONS, subscription_id, event)


async def deactivate_subscription(
    conn: asyncpg.Connection, *, subscription_id: str, tenant_id: str | None = None
) -> bool:
    """Forget a subscription (only if it is ``tenant_id``'s, when given) and queue its removal (ingest
    refuses it from then on); False if unknown."""
    tenant_id = await db.delete_subscription(conn, subscription_id=subscription_id, tenant_id=tenant_id)
    if tenant_id is None:
        return False
    event = SubscriptionRemoved(subscription_id=subscription_id, tenant_id=tenant_id)
    await enqueue_event(conn, topics.SUBSCRIPTIONS, subscription_id, event)
    return True


async def put_subscription(pool: asyncpg.Pool, *, tenant_id: str, subscription_id: str, token: str) -> None:
    """Record a subscription and publish its token hash for ingest (the development endpoint); 409 when
    the id is another tenant's."""
    try:
        async with pool.acquire() as conn, conn.transaction():
            if await db.get_tenant(conn, tenant_id=tenant_id) is None:
                raise NotFound("no such tenant")
            await activate_subscription(
                conn, tenant_id=tenant_id, subscription_id=subscription_id, token=token
            )
    except SubscriptionTaken as exc:
        raise Conflict("this subscription id belongs to another tenant") from exc


async def remove_subscription(pool: asyncpg.Pool, *, subscription_id: str) -> None:
    """Forget a subscription; ingest refuses its notifications from then on."""
    async with pool.acquire() as conn, conn.transaction():
        if not await deactivate_subscription(conn, subscription_id=subscription_id):
            raise NotFound("no such subscription")
