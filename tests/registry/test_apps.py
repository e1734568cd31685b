"""Apps: CRUD, webhookUrl rules, tenant isolation, signing secrets and rotation, test-webhook, change stream."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager
from tests.registry.conftest import Registry, registry_settings
from tests.support import (
    SMS_INBOUND_FIELDS,
    TopicTail,
    WebhookReceiver,
    assert_error,
    eventually,
    free_port,
    keyed_events,
    running_receiver,
)

from gravity_events import topics
from gravity_events.models import AppDeleted, AppUpserted
from gravity_events.settings import KafkaSettings
from gravity_registry.app import create_app
from gravity_registry.settings import DEV_SECRET_KEY
from gravity_webhooks import SecretBox, SignatureError, verify

APP_ID = re.compile(r"^app_[0-9a-f]{16}$")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def _app(registry: Registry, tenant: dict[str, Any], **fields: Any) -> dict[str, Any]:
    r = await registry.client.post("/v1/apps", json={"name": "CRM", **fields}, headers=tenant["auth"])
    assert r.status_code == 201, r.text
    return dict(r.json())


async def test_app_lifecycle(registry: Registry) -> None:
    c, tenant = registry.client, await registry.tenant()
    created = await _app(registry, tenant, webhookUrl="https://example.com/hook")
    assert set(created) == {
        "appId", "tenantId", "name", "webhookUrl", "disabled", "createdAt", "updatedAt", "signingSecret"
    }  # fmt: skip
    assert APP_ID.match(created["appId"]) and created["tenantId"] == tenant["tenantId"]
    assert created["webhookUrl"] == "https://example.com/hook" and created["disabled"] is False
    assert TIMESTAMP.match(created["createdAt"]) and created["updatedAt"] == created["createdAt"]
    secret = created["signingSecret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) >= 24
    app = {k: v for k, v in created.items() if k != "signingSecret"}
    auth = tenant["auth"]

    got = await c.get(f"/v1/apps/{app['appId']}", headers=auth)
    assert got.status_code == 200 and got.json() == app  # the secret is never shown again
    assert (await c.get("/v1/apps", headers=auth)).json() == {"apps": [app]}

    renamed = (await c.put(f"/v1/apps/{app['appId']}", json={"name": "ERP"}, headers=auth)).json()
    assert renamed["name"] == "ERP" and renamed["webhookUrl"] == app["webhookUrl"]
    assert renamed["updatedAt"] >= app["updatedAt"]
    cleared = (await c.put(f"/v1/apps/{app['appId']}", json={"webhookUrl": None}, headers=auth)).json()
    assert cleared["webhookUrl"] is None and cleared["name"] == "ERP"
    disabled = (await c.put(f"/v1/apps/{app['appId']}", json={"disabled": True}, headers=auth)).json()
    assert disabled["disabled"] is True
    enabled = (await c.put(f"/v1/apps/{app['appId']}", json={"disabled": False}, headers=auth)).json()
    assert enabled["disabled"] is False

    assert (await c.delete(f"/v1/apps/{app['appId']}", headers=auth)).status_code == 204
    assert_error(await c.get(f"/v1/apps/{app['appId']}", headers=auth), 404, "not_found")
    assert_error(await c.delete(f"/v1/apps/{app['appId']}", headers=auth), 404, "not_found")
    assert (await c.get("/v1/apps", headers=auth)).json() == {"apps": []}


async def test_app_without_url(registry: Registry) -> None:
    tenant = await registry.tenant()
    app = await _app(registry, tenant)
    assert app["webhookUrl"] is None
    r = await registry.client.post(f"/v1/apps/{app['appId']}/test-webhook", headers=tenant["auth"])
    assert_error(r, 409, "conflict")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x", "webhookUrl": "not a url"}, "webhookUrl"),
        ({"name": "x", "webhookUrl": "/relative/path"}, "webhookUrl"),
        ({"name": "x", "webhookUrl": "ftp://example.com/hook"}, "webhookUrl"),
        ({"name": "x", "webhookUrl": "https://"}, "webhookUrl"),
        ({"name": "x", "webhookUrl": "https://example.com/" + "a" * 1990}, "webhookUrl"),
        ({"name": "x", "webhookUrl": 42}, "webhookUrl"),
        ({"name": "x", "colour": "blue"}, "colour"),
    ],
)
async def test_app_validation(registry: Registry, body: dict[str, Any], field: str) -> None:
    tenant = await registry.tenant()
    r = await registry.client.post("/v1/apps", json=body, headers=tenant["auth"])
    error = assert_error(r, 422, "validation_error")
    assert field in [d["field"] for d in error["error"]["details"]], error


async def test_put_validation(registry: Registry) -> None:
    c, tenant = registry.client, await registry.tenant()
    app = await _app(registry, tenant)
    url = f"/v1/apps/{app['appId']}"
    for body, field in [
        ({"webhookUrl": "gopher://x"}, "webhookUrl"),
        ({"name": None}, "name"),
        ({"disabled": None}, "disabled"),
        ({"disabled": "maybe"}, "disabled"),
    ]:
        error = assert_error(await c.put(url, json=body, headers=tenant["auth"]), 422, "validation_error")
        assert field in [d["field"] for d in error["error"]["details"]], (body, error)
    assert (await c.get(url, headers=tenant["auth"])).json()["webhookUrl"] is None  # nothing half-written


async def test_http_is_accepted_in_development(registry: Registry) -> None:
    tenant = await registry.tenant()
    app = await _app(registry, tenant, webhookUrl="http://127.0.0.1:9/hook")
    assert app["webhookUrl"] == "http://127.0.0.1:9/hook"


async def test_production_rules(
    kafka_settings: KafkaSettings, make_database: Callable[[], Awaitable[str]]
) -> None:
    settings = registry_settings(
        kafka_settings,
        await make_database(),
        GRAVITY_ENV="production",
        GRAVITY_SECRET_KEY="k" * 40,
    )
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://registry") as c:
            admin = {"Authorization": f"Bearer {settings.admin_token.get_secret_value()}"}  # type: ignore[union-attr]
            tenant = (await c.post("/v1/tenants", json={"name": "prod"}, headers=admin)).json()
            auth = {"Authorization": f"Bearer {tenant['apiKey']}"}
            for url in [
                "http://example.com/hook",  # https only
                "https://127.0.0.1/hook",
                "https://10.1.2.3/hook",
                "https://169.254.169.254/latest/meta-data",
                "https://[::1]/hook",
                "https://localhost/hook",
                "https://[::ffff:192.168.0.1]/hook",
            ]:
                r = await c.post("/v1/apps", json={"name": "x", "webhookUrl": url}, headers=auth)
                error = assert_error(r, 422, "validation_error")
                assert error["error"]["details"][0]["field"] == "webhookUrl", url
            r = await c.post(
                "/v1/apps", json={"name": "x", "webhookUrl": "https://8.8.8.8/hook"}, headers=auth
            )
            assert r.status_code == 201, r.text
            app_id = r.json()["appId"]
            r = await c.put(f"/v1/apps/{app_id}", json={"webhookUrl": "https://10.0.0.1/"}, headers=auth)
            assert_error(r, 422, "validation_error")


async def test_apps_are_tenant_isolated(registry: Registry) -> None:
    c = registry.client
    a, b = await registry.tenant("A"), await registry.tenant("B")
    app = await _app(registry, a, webhookUrl="http://127.0.0.1:9/hook")
    path = f"/v1/apps/{app['appId']}"
    for method, url, body in [
        ("GET", path, None),
        ("PUT", path, {"name": "stolen"}),
        ("DELETE", path, None),
        ("POST", path + "/rotate-secret", None),
        ("POST", path + "/test-webhook", None),
    ]:
        assert_error(await c.request(method, url, json=body, headers=b["auth"]), 404, "not_found")
    assert (await c.get("/v1/apps", headers=b["auth"])).json() == {"apps": []}
    assert (await c.get(path, headers=a["auth"])).json()["name"] == "CRM"
    for method, url in [("GET", "/v1/apps"), ("POST", "/v1/apps"), ("GET", path), ("DELETE", path)]:
        assert_error(await c.request(method, url, json={"name": "x"}), 401, "unauthorized")


async def _test_webhook(registry: Registry, tenant: dict[str, Any], app_id: str) -> dict[str, Any]:
    r = await registry.client.post(f"/v1/apps/{app_id}/test-webhook", headers=tenant["auth"], timeout=20)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_test_webhook_outcomes(registry: Registry) -> None:
    tenant = await registry.tenant()
    async with running_receiver() as receiver:
        receiver.behave("/ok", status=204, body=b"")
        receiver.behave("/fail", status=500, body=b"boom " * 2000)
        receiver.behave("/hang", hang=True)
        ok = await _app(registry, tenant, webhookUrl=receiver.url("/ok"))
        fail = await _app(registry, tenant, webhookUrl=receiver.url("/fail"))
        hang = await _app(registry, tenant, webhookUrl=receiver.url("/hang"))
        dead = await _app(registry, tenant, webhookUrl=f"http://127.0.0.1:{free_port()}/hook")

        assert await _test_webhook(registry, tenant, ok["appId"]) == {"ok": True, "status": 204, "body": ""}
        [request] = receiver.received("/ok")
        payload = orjson.loads(request.body)
        assert payload["type"] == "test" and re.match(r"^msg_[0-9a-f]{12}$", payload["messageId"])
        assert set(payload) == set(SMS_INBOUND_FIELDS)
        assert payload["tenantId"] == tenant["tenantId"] and TIMESTAMP.match(payload["timestamp"])
        assert request.headers["content-type"] == "application/json"
        assert request.headers["webhook-id"] == payload["messageId"]
        assert request.headers["user-agent"].startswith("Gravity-SMS")
        verify(ok["signingSecret"], request.headers, request.body)

        failed = await _test_webhook(registry, tenant, fail["appId"])
        assert failed["ok"] is False and failed["status"] == 500
        assert failed["body"].startswith("boom") and len(failed["body"]) == 4096

        started = time.monotonic()
        hung = await _test_webhook(registry, tenant, hang["appId"])
        assert time.monotonic() - started >= 4.9  # the 5-second budget was used, not cut short
        assert hung["ok"] is False and hung["status"] is None and "timed out" in hung["body"]

        refused = await _test_webhook(registry, tenant, dead["appId"])
        assert refused["ok"] is False and refused["status"] is None and "connection" in refused["body"]

        # allowed on a disabled app
        await registry.client.put(f"/v1/apps/{ok['appId']}", json={"disabled": True}, headers=tenant["auth"])
        assert (await _test_webhook(registry, tenant, ok["appId"]))["ok"] is True


async def test_rotation_signs_with_both_secrets(registry: Registry, kafka_settings: KafkaSettings) -> None:
    tenant = await registry.tenant()
    async with running_receiver() as receiver:
        app = await _app(registry, tenant, webhookUrl=receiver.url("/hook"))
        old = app["signingSecret"]
        r = await registry.client.post(f"/v1/apps/{app['appId']}/rotate-secret", headers=tenant["auth"])
        assert r.status_code == 200, r.text
        rotated = r.json()
        new = rotated["signingSecret"]
        assert new != old and new.startswith("whsec_") and rotated["appId"] == app["appId"]
        assert TIMESTAMP.match(rotated["previousSecretExpiresAt"])
        await _test_webhook(registry, tenant, app["appId"])
        [request] = receiver.received("/hook")
        assert len(request.headers["webhook-signature"].split()) == 2
        verify(old, request.headers, request.body)
        verify(new, request.headers, request.body)
        with pytest.raises(SignatureError):
            verify("whsec_" + base64.b64encode(b"x" * 32).decode(), request.headers, request.body)

    # fanout learns both secrets from the change stream (encrypted, never in clear)
    box = SecretBox(DEV_SECRET_KEY)
    first, second = await keyed_events(kafka_settings, topics.APPS, app["appId"], count=2, timeout=5)
    assert isinstance(first, AppUpserted) and isinstance(second, AppUpserted)
    assert [box.decrypt(s.ciphertext) for s in first.signing_secrets] == [old]
    assert [box.decrypt(s.ciphertext) for s in second.signing_secrets] == [new, old]
    assert second.signing_secrets[0].expires_at is None and second.signing_secrets[1].expires_at is not None
    assert old not in str(second.model_dump()) and new not in str(second.model_dump())


async def test_changes_reach_the_apps_stream(registry: Registry, kafka_settings: KafkaSettings) -> None:
    c, tenant = registry.client, await registry.tenant()
    app = await _app(registry, tenant, webhookUrl="http://127.0.0.1:9/a")
    await c.put(f"/v1/apps/{app['appId']}", json={"webhookUrl": None}, headers=tenant["auth"])
    await c.delete(f"/v1/apps/{app['appId']}", headers=tenant["auth"])
    created, cleared, deleted = await keyed_events(
        kafka_settings, topics.APPS, app["appId"], count=3, timeout=5
    )
    assert isinstance(created, AppUpserted) and created.webhook_url == "http://127.0.0.1:9/a"
    assert created.tenant_id == tenant["tenantId"] and created.disabled is False
    assert isinstance(cleared, AppUpserted) and cleared.webhook_url is None
    assert deleted == AppDeleted(app_id=app["appId"], tenant_id=tenant["tenantId"])


__all__ = ["WebhookReceiver"]


async def test_the_linger_setting_reaches_the_outbox_producer(
    kafka_settings: KafkaSettings, make_database: Callable[[], Awaitable[str]]
) -> None:
    """``GRAVITY_REGISTRY_LINGER_MS`` is how long a change record may wait for others before it is sent:
    an app's change reaches its topic no sooner (the outbox is woken at once, and the topic is read from
    before the change is made)."""
    settings = registry_settings(kafka_settings, await make_database(), GRAVITY_REGISTRY_LINGER_MS=500)
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://registry") as client:
            registry = Registry(client, settings, app)
            tenant = await registry.tenant()
            async with TopicTail(kafka_settings, topics.APPS, since=int(time.time() * 1000) - 1000) as tail:
                started = time.monotonic()
                created = await _app(registry, tenant, webhookUrl="https://example.com/hook")

                async def published() -> bool:
                    return any(r.key == created["appId"].encode() for r in await tail.poll())

                await eventually(published, timeout=10)
                assert time.monotonic() - started >= 0.45, "the record waited its linger before it was sent"
