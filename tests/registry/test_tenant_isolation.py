"""Defense in depth between tenants: through the API tenant B cannot read, change, delete, test or re-send
tenant A's app, key, delivery or message by id (404, never the data), every query of tenant-owned rows
names the tenant, and a NUL character in a path or query value is a 422, not a 500."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from tests.registry.conftest import Registry, feed, raw, stored
from tests.support import assert_error

from gravity_events.kafka import Envelope
from gravity_events.models import AppEndpointDisabled
from gravity_events.settings import KafkaSettings
from gravity_registry import db, handlers
from gravity_registry.errors import install_error_handlers


@pytest.fixture(scope="module")
async def world(registry: Registry, kafka_settings: KafkaSettings) -> dict[str, Any]:
    """Tenant A with an app, a second key, a stored message and a delivery attempt; tenant B with an app."""
    c = registry.client
    a, b = await registry.tenant("A"), await registry.tenant("B")
    a_app = (
        await c.post("/v1/apps", json={"name": "A", "webhookUrl": "http://127.0.0.1:9/a"}, headers=a["auth"])
    ).json()
    b_app = (
        await c.post("/v1/apps", json={"name": "B", "webhookUrl": "http://127.0.0.1:9/b"}, headers=b["auth"])
    ).json()
    a_key = (await c.post("/v1/api-keys", json={"name": "ci"}, headers=a["auth"])).json()
    await feed(kafka_settings, raw(a["tenantId"]))
    (message,) = await stored(registry, a, 1)
    async with registry.app.state.pool.acquire() as conn:
        await db.insert_deliveries(
            conn,
            rows=[
                db.DeliveryRow(
                    app_id=a_app["appId"],
                    tenant_id=a["tenantId"],
                    message_id=message["messageId"],
                    attempt=1,
                    succeeded=False,
                    response_code=500,
                    duration_ms=3.0,
                    error="HTTP 500",
                    attempted_at=datetime.now(UTC),
                    next_attempt_at=None,
                )
            ],
        )
    return {"a": a, "b": b, "a_app": a_app, "b_app": b_app, "a_key": a_key, "message": message}


async def test_tenant_b_cannot_touch_tenant_a_by_id(registry: Registry, world: dict[str, Any]) -> None:
    c, b = registry.client, world["b"]["auth"]
    app_id, key_id = world["a_app"]["appId"], world["a_key"]["keyId"]
    message_id, own_app = world["message"]["messageId"], world["b_app"]["appId"]
    attempts = [
        ("GET", f"/v1/apps/{app_id}", None),
        ("PUT", f"/v1/apps/{app_id}", {"name": "taken", "webhookUrl": None, "disabled": True}),
        ("POST", f"/v1/apps/{app_id}/rotate-secret", None),
        ("POST", f"/v1/apps/{app_id}/test-webhook", None),
        ("GET", f"/v1/apps/{app_id}/deliveries", None),
        ("POST", f"/v1/apps/{app_id}/deliveries/{message_id}/retry", None),
        ("POST", f"/v1/apps/{own_app}/deliveries/{message_id}/retry", None),  # A's message to B's app
        ("DELETE", f"/v1/apps/{app_id}", None),
        ("DELETE", f"/v1/api-keys/{key_id}", None),
        ("GET", f"/v1/sms/messages/{message_id}", None),
        ("GET", f"/v1/sms/messages?after={message_id}", None),
    ]
    for method, path, body in attempts:
        r = await c.request(method, path, json=body, headers=b)
        assert_error(r, 404, "not_found")
    b_lists = [
        ("/v1/apps", "apps"),
        ("/v1/api-keys", "apiKeys"),
        ("/v1/sms/messages", "messages"),
    ]
    for path, items in b_lists:
        listed = (await c.get(path, headers=b)).json()[items]
        assert app_id not in str(listed) and key_id not in str(listed) and message_id not in str(listed)

    a = world["a"]["auth"]  # and A still has everything, unchanged
    got = (await c.get(f"/v1/apps/{app_id}", headers=a)).json()
    assert (got["name"], got["disabled"], got["webhookUrl"]) == ("A", False, "http://127.0.0.1:9/a")
    assert (await c.get(f"/v1/sms/messages/{message_id}", headers=a)).status_code == 200
    keys = (await c.get("/v1/api-keys", headers=a)).json()["apiKeys"]
    assert key_id in {k["keyId"] for k in keys}
    deliveries = (await c.get(f"/v1/apps/{app_id}/deliveries", headers=a)).json()["deliveries"]
    assert [d["messageId"] for d in deliveries] == [message_id]


async def test_queries_of_tenant_rows_name_the_tenant(registry: Registry, world: dict[str, Any]) -> None:
    """Below the API: the statements themselves find nothing of A's when given B's tenant id."""
    a_id, b_id = world["a"]["tenantId"], world["b"]["tenantId"]
    app_id, key_id = world["a_app"]["appId"], world["a_key"]["keyId"]
    pool: asyncpg.Pool = registry.app.state.pool
    async with pool.acquire() as conn:
        row = await db.get_app(conn, tenant_id=a_id, app_id=app_id)
        assert row is not None
        changed = await db.update_app(
            conn,
            tenant_id=b_id,
            app_id=app_id,
            name="taken",
            webhook_url=None,
            disabled=True,
            signing_secret_enc=row["signing_secret_enc"],
            previous_secret_enc=None,
            previous_expires_at=None,
            now=datetime.now(UTC),
        )
        assert changed is None
        assert await db.disable_app(conn, tenant_id=b_id, app_id=app_id, decided_at=datetime.now(UTC)) is None
        assert (
            await db.list_deliveries(
                conn, tenant_id=b_id, app_id=app_id, message_id=None, succeeded=None, before=None, limit=10
            )
            == []
        )
        await db.touch_api_key(conn, tenant_id=b_id, key_id=key_id, now=datetime(2030, 1, 1, tzinfo=UTC))
        used = await conn.fetchval("SELECT last_used_at FROM api_keys WHERE key_id = $1", key_id)
        assert used is None or used.year < 2030
        after = await db.get_app(conn, tenant_id=a_id, app_id=app_id)
    assert after is not None and (after["name"], after["disabled"]) == ("A", False)


async def test_a_disable_decision_naming_another_tenant_changes_nothing(
    registry: Registry, world: dict[str, Any]
) -> None:
    app_id = world["a_app"]["appId"]
    now = datetime.now(UTC)
    forged = AppEndpointDisabled(
        app_id=app_id, tenant_id=world["b"]["tenantId"], failing_since=now, disabled_at=now
    )
    envelope = Envelope("gravity.deliveries.v1", 0, 0, app_id, 0, {}, forged)
    assert await handlers.project_deliveries([envelope], pool=registry.app.state.pool) is False
    got = (await registry.client.get(f"/v1/apps/{app_id}", headers=world["a"]["auth"])).json()
    assert got["disabled"] is False


# --- NUL characters -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("GET", "/v1/apps/%00", "path.app_id"),
        ("PUT", "/v1/apps/app_%00", "path.app_id"),
        ("DELETE", "/v1/apps/%00", "path.app_id"),
        ("GET", "/v1/apps/%00/deliveries", "path.app_id"),
        ("GET", "/v1/sms/messages/%00", "path.message_id"),
        ("GET", "/v1/sms/messages?from=%00", "query.from"),
        ("GET", "/v1/sms/messages?to=%2B1%00", "query.to"),
        ("GET", "/v1/sms/messages?after=msg_%00", "query.after"),
        ("DELETE", "/v1/api-keys/%00", "path.key_id"),
    ],
)
async def test_a_nul_in_a_path_or_query_value_is_a_validation_error(
    registry: Registry, world: dict[str, Any], method: str, path: str, field: str
) -> None:
    body = {"name": "x"} if method == "PUT" else None
    r = await registry.client.request(method, path, json=body, headers=world["a"]["auth"])
    details = assert_error(r, 422, "validation_error")["error"]["details"]
    assert field in {d["field"] for d in details}, details


async def test_text_postgresql_refuses_is_a_validation_error_wherever_it_comes_from(
    database_url: str,
) -> None:
    """The net under the parameter check: asyncpg's refusal of a NUL (or of a character the database's
    encoding lacks) maps to 422, whatever route sent it."""
    app = FastAPI()
    install_error_handlers(app)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:

        @app.get("/echo")
        async def echo() -> dict[str, str]:
            async with pool.acquire() as conn:
                value: str = await conn.fetchval("SELECT $1::text", "a\x00b")
            return {"value": value}

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            r = await c.get("/echo")
        assert_error(r, 422, "validation_error")
    finally:
        await pool.close()
