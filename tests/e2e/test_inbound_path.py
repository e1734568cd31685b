"""The inbound path as a user meets it: registry API → dev subscription → ingest → stored message.

Both services serve real HTTP on loopback; only their public interfaces are used.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import orjson
import pytest
from tests.registry.conftest import ADMIN_TOKEN, registry_settings
from tests.support import eventually, notification, serve, wait_ready

from gravity_events.settings import KafkaSettings
from gravity_ingest.app import create_app as create_ingest
from gravity_ingest.settings import Settings as IngestSettings
from gravity_registry.app import create_app as create_registry


@pytest.fixture(scope="module")
async def urls(
    kafka_settings: KafkaSettings, make_database: Callable[[], Awaitable[str]]
) -> AsyncIterator[dict[str, str]]:
    registry = create_registry(registry_settings(kafka_settings, await make_database()))
    ingest = create_ingest(
        IngestSettings(
            KAFKA_BOOTSTRAP_SERVERS=kafka_settings.kafka_bootstrap_servers, KAFKA_ENABLE_IDEMPOTENCE=False
        )
    )
    async with serve(registry) as reg_port, serve(ingest) as ing_port:
        out = {"registry": f"http://127.0.0.1:{reg_port}", "ingest": f"http://127.0.0.1:{ing_port}"}
        async with httpx.AsyncClient() as c:
            for base in out.values():
                await wait_ready(base, client=c, timeout=30)
        yield out


async def _connected_tenant(c: httpx.AsyncClient, urls: dict[str, str]) -> dict[str, Any]:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    tenant = (await c.post(urls["registry"] + "/v1/tenants", json={"name": "e2e"}, headers=admin)).json()
    sub = (
        await c.post(
            urls["registry"] + "/v1/dev/subscriptions", json={"tenantId": tenant["tenantId"]}, headers=admin
        )
    ).json()
    return {**tenant, **sub, "auth": {"Authorization": f"Bearer {tenant['apiKey']}"}}


async def test_fifty_concurrent_duplicate_posts_store_one_message(urls: dict[str, str]) -> None:
    async with httpx.AsyncClient(timeout=10) as c:
        t = await _connected_tenant(c, urls)
        body = orjson.dumps(notification(t["subscriptionId"]))
        headers = {"Verification-Token": t["verificationToken"], "Content-Type": "application/json"}
        hook = urls["ingest"] + "/v1/webhooks/ringcentral"

        async def accepted() -> bool:  # the new subscription reaches ingest within 5 s
            return (await c.post(hook, content=body, headers=headers)).status_code == 200

        await eventually(accepted, timeout=5)
        answers = await asyncio.gather(*(c.post(hook, content=body, headers=headers) for _ in range(50)))
        assert {a.status_code for a in answers} == {200}
        marker = notification(t["subscriptionId"])
        assert (await c.post(hook, json=marker, headers=headers)).status_code == 200

        async def listed() -> list[dict[str, Any]]:
            r = await c.get(urls["registry"] + "/v1/sms/messages", headers=t["auth"])
            msgs: list[dict[str, Any]] = r.json()["messages"]
            return msgs if len(msgs) >= 2 else []

        messages = await eventually(listed, timeout=10)
        assert sorted(m["rcMessageId"] for m in messages) == sorted(
            [orjson.loads(body)["body"]["id"], marker["body"]["id"]]
        )


async def test_deleted_subscription_is_refused_by_ingest_within_5_seconds(urls: dict[str, str]) -> None:
    async with httpx.AsyncClient(timeout=10) as c:
        t = await _connected_tenant(c, urls)
        hook = urls["ingest"] + "/v1/webhooks/ringcentral"
        headers = {"Verification-Token": t["verificationToken"]}

        async def status() -> int:
            return (await c.post(hook, json=notification(t["subscriptionId"]), headers=headers)).status_code

        await eventually(lambda: _is(status, 200), timeout=5)
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        r = await c.delete(urls["registry"] + f"/v1/dev/subscriptions/{t['subscriptionId']}", headers=admin)
        assert r.status_code == 204
        await eventually(lambda: _is(status, 401), timeout=5)


async def _is(fn: Callable[[], Awaitable[int]], expected: int) -> bool:
    return await fn() == expected
