"""The webhook path as a user meets it: an app created through the registry API receives each inbound SMS,
signed; its attempts are listed by the deliveries API; a manual re-send arrives again; removing the URL
stops deliveries. Registry, ingest and fanout serve real HTTP on loopback; only public interfaces are used.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import orjson
import pytest
from tests.registry.conftest import ADMIN_TOKEN, registry_settings
from tests.support import eventually, notification, running_receiver, serve, wait_ready

from gravity_events.settings import KafkaSettings
from gravity_fanout.app import create_app as create_fanout
from gravity_fanout.settings import Settings as FanoutSettings
from gravity_ingest.app import create_app as create_ingest
from gravity_ingest.settings import Settings as IngestSettings
from gravity_registry.app import create_app as create_registry
from gravity_webhooks import verify


@pytest.fixture(scope="module")
async def urls(
    kafka_settings: KafkaSettings, make_database: Callable[[], Awaitable[str]]
) -> AsyncIterator[dict[str, str]]:
    kafka = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.kafka_bootstrap_servers,
        "KAFKA_ENABLE_IDEMPOTENCE": kafka_settings.kafka_enable_idempotence,
        "KAFKA_SESSION_TIMEOUT_MS": kafka_settings.kafka_session_timeout_ms,
    }
    registry = create_registry(registry_settings(kafka_settings, await make_database()))
    ingest = create_ingest(IngestSettings(**kafka))
    fanout = create_fanout(
        FanoutSettings(**kafka, GRAVITY_FANOUT_CONSUMER_GROUP="e2e-fanout-" + secrets.token_hex(4))
    )
    async with serve(registry) as reg, serve(ingest) as ing, serve(fanout) as fan:
        out = {
            "registry": f"http://127.0.0.1:{reg}",
            "ingest": f"http://127.0.0.1:{ing}",
            "fanout": f"http://127.0.0.1:{fan}",
        }
        async with httpx.AsyncClient() as c:
            for base in out.values():
                await wait_ready(base, client=c)
        yield out


async def test_an_sms_reaches_the_app_signed_and_is_logged(urls: dict[str, str]) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with running_receiver() as receiver, httpx.AsyncClient(base_url=urls["registry"], timeout=15) as c:
        tenant = (await c.post("/v1/tenants", json={"name": "hooks"}, headers=admin)).json()
        auth = {"Authorization": f"Bearer {tenant['apiKey']}"}
        app = (
            await c.post("/v1/apps", json={"name": "CRM", "webhookUrl": receiver.url("/crm")}, headers=auth)
        ).json()
        sub = (
            await c.post("/v1/dev/subscriptions", json={"tenantId": tenant["tenantId"]}, headers=admin)
        ).json()
        hook = urls["ingest"] + "/v1/webhooks/ringcentral"
        body = orjson.dumps(notification(sub["subscriptionId"], subject="Ship it"))
        headers = {"Verification-Token": sub["verificationToken"], "Content-Type": "application/json"}

        async def accepted() -> bool:
            return (await c.post(hook, content=body, headers=headers)).status_code == 200

        await eventually(accepted, timeout=5)
        [request] = await eventually(lambda: receiver.received("/crm"), timeout=10)
        verify(app["signingSecret"], request.headers, request.body)
        payload = orjson.loads(request.body)
        [message] = (await c.get("/v1/sms/messages", headers=auth)).json()["messages"]
        assert payload == {
            "type": "sms_inbound",
            "messageId": message["messageId"],
            "from": message["from"],
            "to": message["to"],
            "body": "Ship it",
            "rcMessageId": message["rcMessageId"],
            "tenantId": tenant["tenantId"],
            "timestamp": message["timestamp"],
        }
        assert request.headers["webhook-id"] == message["messageId"]

        path = f"/v1/apps/{app['appId']}/deliveries"

        async def logged() -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = (await c.get(path, headers=auth)).json()["deliveries"]
            return found

        [attempt] = await eventually(logged, timeout=10)
        assert attempt["messageId"] == message["messageId"] and attempt["status"] == "succeeded"
        assert attempt["responseCode"] == 200 and attempt["attempt"] == 1

        r = await c.post(f"{path}/{message['messageId']}/retry", headers=auth)
        assert r.status_code == 202
        await eventually(lambda: len(receiver.received("/crm")) == 2, timeout=10)
        assert receiver.received("/crm")[1].body == request.body

        # the URL removed through the API: deliveries stop within 5 s
        await c.put(f"/v1/apps/{app['appId']}", json={"webhookUrl": None}, headers=auth)
        marker = await c.post(
            "/v1/apps", json={"name": "marker", "webhookUrl": receiver.url("/marker")}, headers=auth
        )
        assert marker.status_code == 201

        async def marker_got_one() -> bool:
            sms = orjson.dumps(notification(sub["subscriptionId"]))
            await c.post(hook, content=sms, headers=headers)
            return bool(receiver.received("/marker"))

        await eventually(marker_got_one, timeout=5, interval=0.5)
        before = len(receiver.received("/crm"))
        await c.post(hook, content=orjson.dumps(notification(sub["subscriptionId"])), headers=headers)
        await eventually(lambda: len(receiver.received("/marker")) >= 2, timeout=10)
        assert len(receiver.received("/crm")) == before
