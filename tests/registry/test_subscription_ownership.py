"""A subscription id already mapped to one tenant is never remapped to another, whichever path the id
comes back on (connect, the keeper's recreation, a renewal's answer), and that tenant's notifications
keep being accepted by ingest."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from tests.registry.conftest import registry_settings
from tests.registry.test_connection import FAST_KEEPER, Gateway, registry_client, running_ingest
from tests.simulators.ringcentral import running_ringcentral
from tests.support import assert_error, eventually

from gravity_events.settings import KafkaSettings

RENEW_FAST = {
    **FAST_KEEPER,
    "GRAVITY_RC_SUBSCRIPTION_EXPIRES_IN": 60,
    "GRAVITY_RC_RENEW_BEFORE_SECONDS": 58.5,
}


@pytest.fixture(scope="module")
async def ingest_url(kafka_settings: KafkaSettings) -> AsyncIterator[str]:
    async with running_ingest(kafka_settings) as url:
        yield url


async def mapping(database_url: str) -> dict[str, str]:
    """subscription id → tenant, as the registry stores it, once the outbox has published everything."""
    conn = await asyncpg.connect(database_url)
    try:

        async def published() -> bool:
            return await conn.fetchval("SELECT count(*) FROM outbox") == 0

        await eventually(published, timeout=10)
        rows = await conn.fetch("SELECT subscription_id, tenant_id FROM subscriptions")
    finally:
        await conn.close()
    return {r["subscription_id"]: r["tenant_id"] for r in rows}


async def still_accepted(victim: Gateway, tenant: dict[str, Any], sub_id: str, text: str) -> None:
    """A fresh message of the victim's subscription is accepted by ingest and stored for the victim."""
    message = victim.sim.add_message(text=text)
    await victim.delivered(sub_id, message)

    async def stored() -> bool:
        return message["id"] in {m["rcMessageId"] for m in await victim.messages(tenant, 1)}

    await eventually(stored, timeout=10)


async def test_another_tenants_subscription_id_is_never_remapped(
    kafka_settings: KafkaSettings, make_database: Callable[[], Awaitable[str]], ingest_url: str
) -> None:
    database_url = await make_database()
    settings = registry_settings(kafka_settings, database_url, GRAVITY_PUBLIC_URL=ingest_url, **RENEW_FAST)
    async with (
        running_ringcentral() as sim_a,
        running_ringcentral() as sim_b,
        registry_client(settings) as client,
    ):
        victim, other = (
            Gateway(ingest_url, client, sim_a, database_url),
            Gateway(ingest_url, client, sim_b, database_url),
        )
        tenant_a, tenant_b = await victim.tenant(), await other.tenant()
        taken = (await victim.connect(tenant_a))["subscriptionId"]

        # connect: RingCentral (B's server) answers with A's subscription id → 502, nothing stored
        sim_b.answer_subscription_id(created=taken)
        r = await client.put("/v1/ringcentral/connection", json=other.credentials(), headers=tenant_b["auth"])
        assert_error(r, 502, "ringcentral_error")
        assert_error(
            await client.get("/v1/ringcentral/connection", headers=tenant_b["auth"]), 404, "not_found"
        )
        assert sim_b.deleted_subscriptions == []  # not B's to delete
        assert await mapping(database_url) == {taken: tenant_a["tenantId"]}
        await still_accepted(victim, tenant_a, taken, "after the refused connect")

        # the keeper's recreation: B's subscription is blacklisted and the new one has A's id
        sim_b.answer_subscription_id()
        own = (await other.connect(tenant_b))["subscriptionId"]
        sim_b.answer_subscription_id(created=taken)
        sim_b.blacklist(own)

        async def refused() -> dict[str, Any] | None:
            shown = await other.connection(tenant_b)
            return shown if shown["lastError"] and "another tenant" in shown["lastError"] else None

        shown = await eventually(refused, timeout=10)
        assert shown["subscriptionId"] == own and shown["status"] == "blacklisted"
        assert await mapping(database_url) == {taken: tenant_a["tenantId"], own: tenant_b["tenantId"]}
        await still_accepted(victim, tenant_a, taken, "after the refused recreation")

        # a renewal answering with A's id is refused too, and B's row keeps its own id, so disconnecting
        # B later cannot remove A's mapping
        sim_b.answer_subscription_id()
        await other.connect(tenant_b)
        own = (await other.connection(tenant_b))["subscriptionId"]
        sim_b.answer_subscription_id(renewed=taken)

        async def renewal_refused() -> dict[str, Any] | None:
            shown = await other.connection(tenant_b)
            return shown if shown["lastError"] and "different subscription" in shown["lastError"] else None

        shown = await eventually(renewal_refused, timeout=10)
        assert shown["subscriptionId"] == own
        r = await client.delete("/v1/ringcentral/connection", headers=tenant_b["auth"])
        assert r.status_code == 204
        assert await mapping(database_url) == {taken: tenant_a["tenantId"]}
        await still_accepted(victim, tenant_a, taken, "after B disconnected")
