"""No tenant's RingCentral server can hurt the others: each misbehaviour, over real HTTP, ends that
tenant's check only (its ``lastError``, its next check backed off) while another tenant on a well-behaved
server keeps being renewed; a misbehaving server answers the connect API with 502, never 500."""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from tests.registry.conftest import registry_settings
from tests.registry.test_connection import FAST_KEEPER, Gateway, registry_client, running_ingest
from tests.simulators.ringcentral import (
    Answer,
    RingCentralSimulator,
    huge_body,
    raw_answer,
    running_ringcentral,
    trickle,
)
from tests.support import assert_error, eventually

from gravity_events.settings import KafkaSettings

LIMITS = {
    **FAST_KEEPER,
    "GRAVITY_RC_SUBSCRIPTION_EXPIRES_IN": 60,
    "GRAVITY_RC_RENEW_BEFORE_SECONDS": 58.5,  # the good tenant renews every 1.5 s
    "GRAVITY_RC_RETRY_MAX_SECONDS": 2,
    "GRAVITY_RC_CALL_DEADLINE_SECONDS": 1,
    "GRAVITY_RC_CHECK_DEADLINE_SECONDS": 4,
    "GRAVITY_RC_BACKFILL_MAX_PAGES": 5,
    "GRAVITY_RC_KEEPER_CONCURRENCY": 2,  # fewer slots than misbehaving tenants
}

# route → what it answers; the error each must leave in lastError
SUBSCRIPTION_FAULTS: dict[str, tuple[Answer, str]] = {
    "not JSON": (raw_answer("<html>maintenance</html>", headers={"content-type": "text/html"}), "not JSON"),
    "malformed JSON": (raw_answer('{"id": "x", "status": '), "not JSON"),
    "NaN in JSON": (raw_answer('{"id": "x", "status": "Active", "expirationTime": NaN}'), "not JSON"),
    "deep JSON": (raw_answer("[" * 200_000 + "]" * 200_000), "not JSON"),
    "wrong types": (
        raw_answer('{"id": {"nested": true}, "status": [], "expirationTime": 7}'),
        "unexpected subscription",
    ),
    "year 1": (
        raw_answer('{"id": "x", "status": "Active", "expirationTime": "0001-01-01T00:00:00.000Z"}'),
        "unexpected subscription",
    ),
    "trickle": (trickle(every=0.2), "did not answer within 1 s"),
    "gigabytes, declared": (huge_body(size=4 * 1024**3), "larger than"),
    "gigabytes, chunked": (huge_body(size=0), "larger than"),
    "huge Retry-After": (raw_answer("{}", status=429, headers={"retry-after": "1e300"}), "429"),
    "inf Retry-After": (raw_answer("{}", status=503, headers={"retry-after": "inf"}), "503"),
}


@pytest.fixture(scope="module")
async def ingest_url(kafka_settings: KafkaSettings) -> AsyncIterator[str]:
    async with running_ingest(kafka_settings) as url:
        yield url


@contextlib.asynccontextmanager
async def simulators(count: int) -> AsyncIterator[list[RingCentralSimulator]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(running_ringcentral()) for _ in range(count)]


async def connection_row(database_url: str, tenant_id: str) -> dict[str, Any]:
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow("SELECT * FROM rc_connections WHERE tenant_id = $1", tenant_id)
    finally:
        await conn.close()
    assert row is not None
    return dict(row)


def faulted(sim: RingCentralSimulator, method: str, path_suffix: str) -> list[float]:
    """When the simulator answered ``method path_suffix`` with its fault."""
    return [c.at for c in sim.calls_to(method, path_suffix) if c.detail.get("fault")]


async def test_every_misbehaviour_ends_only_that_tenants_check(
    kafka_settings: KafkaSettings,
    make_database: Callable[[], Awaitable[str]],
    ingest_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gravity_registry.handlers.keeper")
    database_url = await make_database()
    settings = registry_settings(kafka_settings, database_url, GRAVITY_PUBLIC_URL=ingest_url, **LIMITS)
    names = [*SUBSCRIPTION_FAULTS, "endless paging"]
    async with simulators(len(names) + 1) as sims, registry_client(settings) as client:
        good_sim, bad_sims = sims[0], dict(zip(names, sims[1:], strict=True))
        good = Gateway(ingest_url, client, good_sim, database_url)
        good_tenant = await good.tenant()
        good_sub = (await good.connect(good_tenant))["subscriptionId"]

        bad: dict[str, tuple[Gateway, dict[str, Any]]] = {}
        bad_sims["endless paging"].page_forever()
        for name, sim in bad_sims.items():
            gateway = Gateway(ingest_url, client, sim, database_url)
            tenant = await gateway.tenant()
            await gateway.connect(tenant)
            bad[name] = (gateway, tenant)
        bad_sims["endless paging"].add_message(text="listed on every page")  # after its connect
        for name, (answer, _) in SUBSCRIPTION_FAULTS.items():
            bad_sims[name].misbehave("subscription", answer)
            bad_sims[name].misbehave("renew", answer)

        async def failed(name: str) -> dict[str, Any] | None:
            gateway, tenant = bad[name]
            shown = await gateway.connection(tenant)
            return shown if shown["lastError"] else None

        async def all_failed() -> dict[str, dict[str, Any]]:
            shown = {name: await failed(name) for name in SUBSCRIPTION_FAULTS}
            assert all(shown.values()), [name for name, v in shown.items() if not v]
            return {name: v for name, v in shown.items() if v}

        for name, shown in (await eventually(all_failed, timeout=20)).items():
            assert SUBSCRIPTION_FAULTS[name][1] in shown["lastError"], (name, shown)
            assert len(shown["lastError"]) <= 500
        # the endless store: read to the page limit once (a failed check, then the next one succeeds)
        await eventually(lambda: "more pages after 5" in caplog.text, timeout=20)
        assert len(bad_sims["endless paging"].calls_to("GET", "/message-store")) == 5
        [listed] = await bad["endless paging"][0].messages(bad["endless paging"][1], 1)
        assert listed["body"] == "listed on every page"

        # the well-behaved tenant keeps being renewed meanwhile, at its usual pace
        renewals = f"/subscription/{good_sub}/renew"
        before = len(good_sim.calls_to("POST", renewals))
        await eventually(lambda: len(good_sim.calls_to("POST", renewals)) >= before + 3, timeout=15)
        shown = await good.connection(good_tenant)
        assert shown["status"] == "active" and shown["lastError"] is None

        # a Retry-After of 1e300 or inf is read as a day, no more (and overflows nothing)
        for name in ("huge Retry-After", "inf Retry-After"):
            row = await connection_row(database_url, bad[name][1]["tenantId"])
            wait = (row["next_check_at"] - datetime.now(UTC)).total_seconds()
            assert 86_000 < wait <= 86_400, (name, wait)
            assert len(faulted(bad_sims[name], "GET", "/subscription/" + row["subscription_id"])) == 1

        # repeated failures back off: 0.3 s doubling, capped at 2 s
        sim = bad_sims["not JSON"]
        sub_id = (await connection_row(database_url, bad["not JSON"][1]["tenantId"]))["subscription_id"]
        await eventually(lambda: len(faulted(sim, "GET", f"/subscription/{sub_id}")) >= 6, timeout=20)
        times = faulted(sim, "GET", f"/subscription/{sub_id}")
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert gaps[0] < 1.0 and gaps[2] >= 1.0, gaps
        assert max(gaps) < 3.0, gaps

        # the server recovers: the next check clears lastError
        sim.misbehave("subscription", None)
        sim.misbehave("renew", None)

        async def recovered() -> bool:
            gateway, tenant = bad["not JSON"]
            return (await gateway.connection(tenant))["lastError"] is None

        await eventually(recovered, timeout=10)


@pytest.mark.parametrize(
    ("route", "answer"),
    [
        ("token", raw_answer("<html>oops</html>")),
        ("token", raw_answer('{"access_token": 5, "expires_in": "soon"}')),
        ("token", raw_answer('{"access_token": "t", "expires_in": 1e999}')),
        ("create_subscription", raw_answer('{"id": "s"}')),
        ("create_subscription", huge_body(size=0)),
        ("token", trickle(every=0.2)),
    ],
    ids=[
        "token not JSON",
        "token wrong types",
        "token infinite lifetime",
        "subscription incomplete",
        "huge",
        "trickle",
    ],
)
async def test_connect_to_a_misbehaving_server_is_502_and_stores_nothing(
    kafka_settings: KafkaSettings,
    make_database: Callable[[], Awaitable[str]],
    ingest_url: str,
    route: str,
    answer: Answer,
) -> None:
    database_url = await make_database()
    settings = registry_settings(kafka_settings, database_url, GRAVITY_PUBLIC_URL=ingest_url, **LIMITS)
    async with running_ringcentral() as sim, registry_client(settings) as client:
        gateway = Gateway(ingest_url, client, sim, database_url)
        tenant = await gateway.tenant()
        sim.misbehave(route, answer)
        r = await client.put("/v1/ringcentral/connection", json=gateway.credentials(), headers=tenant["auth"])
        assert_error(r, 502, "ringcentral_error")
        assert_error(await client.get("/v1/ringcentral/connection", headers=tenant["auth"]), 404, "not_found")
