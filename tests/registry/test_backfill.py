"""Nothing RingCentral holds is missed when a tenant connects again: the backfill after any connect of a
tenant with stored messages starts at its newest stored message (minus the overlap), and a message seen
both as a notification (string ``body.id``) and in the message-store list (integer ``id``) is one
message."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from tests.registry.conftest import registry_settings
from tests.registry.test_connection import FAST_KEEPER, Gateway, registry_client, running_ingest
from tests.simulators.ringcentral import running_ringcentral
from tests.support import eventually

from gravity_events.settings import KafkaSettings


@pytest.fixture(scope="module")
async def ingest_url(kafka_settings: KafkaSettings) -> AsyncIterator[str]:
    async with running_ingest(kafka_settings) as url:
        yield url


@pytest.fixture
async def gateway(
    kafka_settings: KafkaSettings, make_database: Callable[[], Awaitable[str]], ingest_url: str
) -> AsyncIterator[Gateway]:
    database_url = await make_database()
    settings = registry_settings(kafka_settings, database_url, GRAVITY_PUBLIC_URL=ingest_url, **FAST_KEEPER)
    async with running_ringcentral() as sim, registry_client(settings) as client:
        yield Gateway(ingest_url, client, sim, database_url)


async def stored_ids(gateway: Gateway, tenant: dict[str, Any], expected: set[str]) -> list[str]:
    """Wait until exactly ``expected`` is stored (each once); return the stored rcMessageIds."""

    async def exactly() -> list[str]:
        r = await gateway.client.get("/v1/sms/messages?limit=100", headers=tenant["auth"])
        ids = [m["rcMessageId"] for m in r.json()["messages"]]
        return ids if set(ids) == expected else []

    ids = await eventually(exactly, timeout=20)
    assert len(ids) == len(set(ids)), ids
    return ids


async def test_new_credentials_after_error_backfill_what_was_missed(gateway: Gateway) -> None:
    sim = gateway.sim
    tenant = await gateway.tenant()
    connected = await gateway.connect(tenant)
    first = sim.add_message(text="delivered")
    await gateway.delivered(connected["subscriptionId"], first)
    await stored_ids(gateway, tenant, {first["id"]})

    sim.valid_jwts.clear()  # the JWT is revoked: the connection ends in error
    sim.revoke_refresh_tokens()
    sim.expire_access_tokens()

    async def errored() -> bool:
        return (await gateway.connection(tenant))["status"] == "error"

    await eventually(errored, timeout=10)
    missed = [sim.add_message(text=f"while in error {i}") for i in range(3)]  # only in the store

    sim.valid_jwts.add("new-jwt")
    r = await gateway.client.put(
        "/v1/ringcentral/connection", json=gateway.credentials(jwt="new-jwt"), headers=tenant["auth"]
    )
    assert r.status_code == 200, r.text
    await stored_ids(gateway, tenant, {first["id"], *(m["id"] for m in missed)})


async def test_a_replaced_connection_backfills_from_the_newest_stored_message(gateway: Gateway) -> None:
    sim = gateway.sim
    tenant = await gateway.tenant()
    connected = await gateway.connect(tenant)
    first = sim.add_message(text="delivered")
    await gateway.delivered(connected["subscriptionId"], first)
    await stored_ids(gateway, tenant, {first["id"]})
    sim.blacklist(connected["subscriptionId"])  # RingCentral stops delivering; nobody is told yet
    sim.fail_subscription_creates(10_000)  # and the keeper cannot recreate it meanwhile
    missed = [sim.add_message(text=f"undelivered {i}") for i in range(2)]
    sim.fail_subscription_creates(0)
    await gateway.connect(tenant)  # the tenant replaces the connection itself
    await stored_ids(gateway, tenant, {first["id"], *(m["id"] for m in missed)})


async def test_a_message_notified_and_listed_is_stored_once(gateway: Gateway) -> None:
    sim = gateway.sim
    tenant = await gateway.tenant()
    connected = await gateway.connect(tenant)
    message = sim.add_message(text="both ways")
    await gateway.delivered(connected["subscriptionId"], message)  # body.id is a string
    await stored_ids(gateway, tenant, {message["id"]})

    # RingCentral's list API gives the same message with an integer id
    token = next(iter(sim.access_tokens))
    async with httpx.AsyncClient() as c:
        listed = (
            await c.get(
                f"{sim.server_url}/restapi/v1.0/account/~/extension/~/message-store",
                headers={"Authorization": f"Bearer {token}"},
            )
        ).json()["records"]
    assert [r["id"] for r in listed] == [int(message["id"])]

    sim.blacklist(connected["subscriptionId"])  # the keeper recreates, then backfills from the list
    only_listed = sim.add_message(text="only listed")

    async def backfilled() -> bool:
        return bool(sim.calls_to("GET", "/message-store")[1:])

    await eventually(backfilled, timeout=15)
    [stored, *_] = ids = await stored_ids(gateway, tenant, {message["id"], only_listed["id"]})
    assert sorted(ids) == sorted([message["id"], only_listed["id"]]) and isinstance(stored, str)


async def test_a_stored_message_from_the_future_does_not_hide_missed_ones(gateway: Gateway) -> None:
    sim = gateway.sim
    tenant = await gateway.tenant()
    connected = await gateway.connect(tenant)
    future = sim.add_message(text="wrong clock", creationTime="2100-01-01T00:00:00.000Z")
    await gateway.delivered(connected["subscriptionId"], future)
    await stored_ids(gateway, tenant, {future["id"]})
    sim.blacklist(connected["subscriptionId"])
    missed = sim.add_message(text="missed")
    await stored_ids(gateway, tenant, {future["id"], missed["id"]})
