"""Limits that keep one tenant from exhausting the registry: the request-body cap (checked before parsing),
pages of tenants and API keys, the per-tenant rate limits of test webhooks and re-sends, and the cap on
apps per tenant."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager
from tests.registry.conftest import Registry, feed, raw, registry_settings, stored
from tests.support import assert_error, running_receiver, wait_ready

from gravity_events.settings import KafkaSettings
from gravity_registry.app import create_app
from gravity_registry.limits import TokenBuckets

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
async def limited(
    kafka_settings: KafkaSettings, make_database: Callable[[], Awaitable[str]]
) -> AsyncIterator[Registry]:
    """A registry with small, countable limits (the body cap stays at its default)."""
    settings = registry_settings(
        kafka_settings,
        await make_database(),
        GRAVITY_MAX_APPS_PER_TENANT=3,
        GRAVITY_REGISTRY_TEST_WEBHOOK_BURST=2,
        GRAVITY_REGISTRY_TEST_WEBHOOK_PER_MINUTE=1,
        GRAVITY_REGISTRY_RESEND_BURST=2,
        GRAVITY_REGISTRY_RESEND_PER_MINUTE=2,
    )
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://registry") as client:
            await wait_ready(client=client, timeout=30)
            yield Registry(client, settings, app)


# --- request bodies -----------------------------------------------------------------------------------


async def test_a_declared_length_over_the_cap_is_refused_before_parsing(limited: Registry) -> None:
    tenant = await limited.tenant()
    body = orjson.dumps({"name": "x" * LIMIT})  # not even valid for the model: never parsed
    r = await limited.client.post(
        "/v1/apps", content=body, headers={**tenant["auth"], "content-type": "application/json"}
    )
    error = assert_error(r, 413, "payload_too_large")["error"]
    assert error["details"] == {"limit": LIMIT}
    assert (await limited.client.get("/v1/apps", headers=tenant["auth"])).json()["apps"] == []


async def test_a_streamed_body_is_refused_once_it_passes_the_cap_without_reading_the_rest(
    limited: Registry,
) -> None:
    tenant = await limited.tenant()
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"name": "'
        for _ in range(10_000):  # 40 MiB if it were all read
            sent += 4096
            yield b"x" * 4096

    r = await limited.client.post(
        "/v1/apps", content=endless(), headers={**tenant["auth"], "content-type": "application/json"}
    )
    assert_error(r, 413, "payload_too_large")
    assert sent <= LIMIT + 2 * 4096, sent


async def test_a_body_within_the_cap_is_parsed_as_usual(limited: Registry) -> None:
    tenant = await limited.tenant()
    body = orjson.dumps({"name": "ci", "padding": "x" * (LIMIT - 100)})
    r = await limited.client.post(
        "/v1/api-keys", content=body, headers={**tenant["auth"], "content-type": "application/json"}
    )
    assert_error(r, 422, "validation_error")  # parsed: the unknown field is refused, not the size
    ok = await limited.client.post("/v1/api-keys", json={"name": "ci"}, headers=tenant["auth"])
    assert ok.status_code == 201, ok.text


# --- pages ---------------------------------------------------------------------------------------------


async def _all_pages(
    registry: Registry, path: str, items: str, auth: dict[str, str], limit: int
) -> list[Any]:
    got: list[Any] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        r = await registry.client.get(path, params=params, headers=auth)
        assert r.status_code == 200, r.text
        page = r.json()
        assert set(page) == {items, "nextCursor"}
        assert len(page[items]) <= limit
        got += page[items]
        cursor = page["nextCursor"]
        if cursor is None:
            return got


async def test_api_keys_page_with_next_cursor(limited: Registry) -> None:
    tenant = await limited.tenant()
    for n in range(4):
        assert (
            await limited.client.post("/v1/api-keys", json={"name": f"k{n}"}, headers=tenant["auth"])
        ).status_code == 201
    everything = (await limited.client.get("/v1/api-keys", headers=tenant["auth"])).json()
    assert len(everything["apiKeys"]) == 5 and everything["nextCursor"] is None  # default limit 100
    paged = await _all_pages(limited, "/v1/api-keys", "apiKeys", tenant["auth"], limit=2)
    assert [k["keyId"] for k in paged] == [k["keyId"] for k in everything["apiKeys"]]
    assert [k["name"] for k in paged] == ["default", "k0", "k1", "k2", "k3"]


async def test_tenants_page_with_next_cursor(limited: Registry) -> None:
    for n in range(3):
        await limited.tenant(f"paged-{n}")
    everything = (await limited.client.get("/v1/tenants", headers=limited.admin)).json()["tenants"]
    paged = await _all_pages(limited, "/v1/tenants", "tenants", limited.admin, limit=2)
    assert [t["tenantId"] for t in paged] == [t["tenantId"] for t in everything]
    assert len(paged) == len({t["tenantId"] for t in paged}) >= 3


@pytest.mark.parametrize("path", ["/v1/api-keys", "/v1/tenants"])
@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"cursor": "not-a-cursor"}])
async def test_page_parameters_are_checked(limited: Registry, path: str, params: dict[str, Any]) -> None:
    auth = limited.admin if path == "/v1/tenants" else (await limited.tenant())["auth"]
    assert_error(await limited.client.get(path, params=params, headers=auth), 422, "validation_error")


# --- rate limits ---------------------------------------------------------------------------------------


async def test_test_webhooks_are_rate_limited_per_tenant(limited: Registry) -> None:
    a, b = await limited.tenant("A"), await limited.tenant("B")
    async with running_receiver() as receiver:
        apps = {}
        for tenant in (a, b):
            r = await limited.client.post(
                "/v1/apps", json={"name": "t", "webhookUrl": receiver.url("/t")}, headers=tenant["auth"]
            )
            apps[tenant["tenantId"]] = r.json()["appId"]

        async def test(tenant: dict[str, Any]) -> httpx.Response:
            return await limited.client.post(
                f"/v1/apps/{apps[tenant['tenantId']]}/test-webhook", headers=tenant["auth"], timeout=20
            )

        for _ in range(2):  # the burst
            assert (await test(a)).status_code == 200
        refused = await test(a)
        error = assert_error(refused, 429, "rate_limited")["error"]
        retry_after = int(refused.headers["retry-after"])
        assert 1 <= retry_after <= 60 and error["details"] == {"retryAfterSeconds": retry_after}
        assert (await test(b)).status_code == 200  # another tenant has a bucket of its own


async def test_resends_are_rate_limited_per_tenant(limited: Registry, kafka_settings: KafkaSettings) -> None:
    tenant = await limited.tenant()
    app = (
        await limited.client.post(
            "/v1/apps", json={"name": "r", "webhookUrl": "http://127.0.0.1:9/hook"}, headers=tenant["auth"]
        )
    ).json()
    await feed(kafka_settings, raw(tenant["tenantId"]))
    (message,) = await stored(limited, tenant, 1)
    path = f"/v1/apps/{app['appId']}/deliveries/{message['messageId']}/retry"
    for _ in range(2):
        assert (await limited.client.post(path, headers=tenant["auth"])).status_code == 202
    refused = await limited.client.post(path, headers=tenant["auth"])
    assert_error(refused, 429, "rate_limited")
    assert 1 <= int(refused.headers["retry-after"]) <= 30


def test_a_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    buckets = TokenBuckets(what="test", per_minute=6, burst=2, clock=lambda: now[0])
    buckets.take("t")
    buckets.take("t")
    with pytest.raises(Exception, match="retry in 10 s"):
        buckets.take("t")
    now[0] = 9.9
    with pytest.raises(Exception, match="retry in 1 s"):
        buckets.take("t")
    now[0] = 10.0
    buckets.take("t")
    buckets.take("other")  # per tenant


# --- apps per tenant ----------------------------------------------------------------------------------


async def test_apps_per_tenant_are_capped(limited: Registry) -> None:
    tenant, other = await limited.tenant(), await limited.tenant()
    for n in range(3):
        r = await limited.client.post("/v1/apps", json={"name": f"a{n}"}, headers=tenant["auth"])
        assert r.status_code == 201, r.text
    error = assert_error(
        await limited.client.post("/v1/apps", json={"name": "one too many"}, headers=tenant["auth"]),
        409,
        "conflict",
    )["error"]
    assert error["details"] == {"limit": 3}
    assert len((await limited.client.get("/v1/apps", headers=tenant["auth"])).json()["apps"]) == 3
    assert (
        await limited.client.post("/v1/apps", json={"name": "o"}, headers=other["auth"])
    ).status_code == 201
    first = (await limited.client.get("/v1/apps", headers=tenant["auth"])).json()["apps"][0]
    assert (
        await limited.client.delete(f"/v1/apps/{first['appId']}", headers=tenant["auth"])
    ).status_code == 204
    assert (
        await limited.client.post("/v1/apps", json={"name": "again"}, headers=tenant["auth"])
    ).status_code == 201


async def test_concurrent_creations_cannot_pass_the_cap(limited: Registry) -> None:
    tenant = await limited.tenant()
    answers = await asyncio.gather(
        *(limited.client.post("/v1/apps", json={"name": f"c{n}"}, headers=tenant["auth"]) for n in range(8))
    )
    assert sorted(r.status_code for r in answers) == [201] * 3 + [409] * 5
    assert len((await limited.client.get("/v1/apps", headers=tenant["auth"])).json()["apps"]) == 3
