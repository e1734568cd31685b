"""Registry REST: tenants, API keys, auth, errors, and what reaches the change streams."""

from __future__ import annotations

import hashlib
from typing import Any

import asyncpg
from tests.registry.conftest import Registry
from tests.support import assert_error, keyed_events

from gravity_events import ids, topics
from gravity_events.models import ApiKeyActive, ApiKeyRevoked
from gravity_events.settings import KafkaSettings


async def test_tenants_need_the_admin_token(registry: Registry) -> None:
    c = registry.client
    assert_error(await c.post("/v1/tenants", json={"name": "x"}), 401, "unauthorized")
    assert_error(await c.get("/v1/tenants", headers={"Authorization": "Bearer wrong"}), 401, "unauthorized")
    tenant = await registry.tenant("Acme")
    assert ids.TENANT_ID_RE.match(tenant["tenantId"]) and tenant["name"] == "Acme"
    assert tenant["apiKey"].startswith("gsk_") and len(tenant["apiKey"]) >= 4 + 43
    assert tenant["createdAt"].endswith("Z") and len(tenant["createdAt"]) == 24
    listed = (await c.get("/v1/tenants", headers=registry.admin)).json()["tenants"]
    mine = [t for t in listed if t["tenantId"] == tenant["tenantId"]]
    assert mine == [{"tenantId": tenant["tenantId"], "name": "Acme", "createdAt": tenant["createdAt"]}]
    # a tenant key is not an admin token
    assert_error(await c.get("/v1/tenants", headers=tenant["auth"]), 401, "unauthorized")


async def test_validation_errors_name_the_field(registry: Registry) -> None:
    c = registry.client
    body = assert_error(
        await c.post("/v1/tenants", json={"name": ""}, headers=registry.admin), 422, "validation_error"
    )
    assert body["error"]["details"][0]["field"] == "name"
    assert_error(
        await c.post("/v1/tenants", content=b"{oops", headers=registry.admin), 422, "validation_error"
    )
    assert_error(await c.get("/v1/nothing-here"), 404, "not_found")


async def test_api_keys_lifecycle(registry: Registry, database_url: str) -> None:
    c = registry.client
    tenant = await registry.tenant()
    created = await c.post("/v1/api-keys", json={"name": "ci"}, headers=tenant["auth"])
    assert created.status_code == 201
    key = created.json()
    assert set(key) == {"keyId", "name", "apiKey", "createdAt"} and ids.KEY_ID_RE.match(key["keyId"])
    listed = (await c.get("/v1/api-keys", headers=tenant["auth"])).json()["apiKeys"]
    assert [k["name"] for k in listed] == ["default", "ci"]
    assert all(set(k) == {"keyId", "name", "createdAt", "lastUsedAt"} for k in listed)
    assert key["apiKey"] not in str(listed)
    # the new key works, records its use, and is stored only as a hash
    ci_auth = {"Authorization": f"Bearer {key['apiKey']}"}
    assert (await c.get("/v1/api-keys", headers=ci_auth)).status_code == 200
    used = {k["keyId"]: k for k in (await c.get("/v1/api-keys", headers=ci_auth)).json()["apiKeys"]}
    assert used[key["keyId"]]["lastUsedAt"] is not None
    conn = await asyncpg.connect(registry.settings.database_url.get_secret_value())
    try:
        stored = await conn.fetchval("SELECT key_sha256 FROM api_keys WHERE key_id = $1", key["keyId"])
        dump = str(await conn.fetch("SELECT * FROM api_keys"))
    finally:
        await conn.close()
    assert stored == hashlib.sha256(key["apiKey"].encode()).hexdigest() and key["apiKey"] not in dump
    # revoked: refused at once
    assert (await c.delete(f"/v1/api-keys/{key['keyId']}", headers=tenant["auth"])).status_code == 204
    assert_error(await c.get("/v1/api-keys", headers=ci_auth), 401, "unauthorized")
    assert_error(await c.delete(f"/v1/api-keys/{key['keyId']}", headers=tenant["auth"]), 404, "not_found")


async def test_api_key_changes_reach_the_change_stream(
    registry: Registry, kafka_settings: KafkaSettings
) -> None:
    c = registry.client
    tenant = await registry.tenant()
    key = (await c.post("/v1/api-keys", json={"name": "rt"}, headers=tenant["auth"])).json()
    await c.delete(f"/v1/api-keys/{key['keyId']}", headers=tenant["auth"])
    events = await keyed_events(kafka_settings, topics.API_KEYS, key["keyId"], count=2, timeout=5)
    assert events[0] == ApiKeyActive(
        key_id=key["keyId"],
        tenant_id=tenant["tenantId"],
        key_sha256=hashlib.sha256(key["apiKey"].encode()).hexdigest(),
    )
    assert events[1] == ApiKeyRevoked(key_id=key["keyId"], tenant_id=tenant["tenantId"])


async def test_keys_are_tenant_isolated(registry: Registry) -> None:
    c = registry.client
    a, b = await registry.tenant("A"), await registry.tenant("B")
    b_key = (await c.post("/v1/api-keys", json={"name": "b"}, headers=b["auth"])).json()
    assert_error(await c.delete(f"/v1/api-keys/{b_key['keyId']}", headers=a["auth"]), 404, "not_found")
    assert b_key["keyId"] not in str((await c.get("/v1/api-keys", headers=a["auth"])).json())


async def test_missing_or_malformed_bearer_is_401(registry: Registry) -> None:
    for headers in (
        {},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer gsk_nope"},
        {"Authorization": "Bearer"},
    ):
        assert_error(await registry.client.get("/v1/sms/messages", headers=headers), 401, "unauthorized")


async def test_dev_subscription_requires_admin_and_existing_tenant(registry: Registry) -> None:
    c = registry.client
    tenant = await registry.tenant()
    body = {"tenantId": tenant["tenantId"], "subscriptionId": "sub-api-test"}
    assert_error(
        await c.post("/v1/dev/subscriptions", json=body, headers=tenant["auth"]), 401, "unauthorized"
    )
    r = await c.post("/v1/dev/subscriptions", json=body, headers=registry.admin)
    assert r.status_code == 201 and len(r.json()["verificationToken"]) >= 32
    missing = {"tenantId": ids.new_tenant_id()}
    assert_error(
        await c.post("/v1/dev/subscriptions", json=missing, headers=registry.admin), 404, "not_found"
    )
    assert (await c.delete("/v1/dev/subscriptions/sub-api-test", headers=registry.admin)).status_code == 204


async def test_migrations_are_idempotent_and_safe_concurrently(make_database: Any) -> None:
    import asyncio

    from gravity_registry import db

    url = await make_database()
    conns = [await asyncpg.connect(url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(db.apply_migrations(c) for c in conns))
        # exactly one copy applied the migrations, all of them, in order
        from importlib import resources

        files = sorted(
            f.name
            for f in resources.files("gravity_registry.migrations").iterdir()
            if f.name.endswith(".sql")
        )
        assert files[0] == "0001_init.sql" and len(files) >= 3
        assert sorted(results, key=len) == [[], [], files]
        assert await db.apply_migrations(conns[0]) == []
        versions = await conns[0].fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [v["version"] for v in versions] == files
    finally:
        for c in conns:
            await c.close()


async def test_production_refuses_weak_configuration() -> None:
    import pytest
    from pydantic import ValidationError

    from gravity_registry.settings import Settings

    with pytest.raises(ValidationError, match="GRAVITY_ADMIN_TOKEN"):
        Settings(GRAVITY_ENV="production", DATABASE_URL="postgresql://x", GRAVITY_SECRET_KEY="k" * 40)
    with pytest.raises(ValidationError, match="GRAVITY_ADMIN_TOKEN"):
        Settings(
            GRAVITY_ENV="production",
            DATABASE_URL="postgresql://x",
            GRAVITY_ADMIN_TOKEN="dev-admin-token",
            GRAVITY_SECRET_KEY="k" * 40,
        )
    with pytest.raises(ValidationError, match="GRAVITY_SECRET_KEY"):
        Settings(GRAVITY_ENV="production", DATABASE_URL="postgresql://x", GRAVITY_ADMIN_TOKEN="a" * 30)
    assert Settings(DATABASE_URL="postgresql://x").admin_token is not None
