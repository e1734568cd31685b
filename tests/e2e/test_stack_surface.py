"""Every surface of the contract through the real stack: health, authentication and errors, tenants, API
keys, apps (test webhook, rotation, re-send), the connection, message filters, the browser-style WebSocket
token, and ingest's ordered checks.

Read as a specification: each test names the promise of the contract it checks.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
from tests.e2e.conftest import (
    ADMIN,
    APP_ID,
    MESSAGE_ID,
    TIMESTAMP,
    Accounts,
    Probes,
    RealStack,
    credentials,
    has_delivery,
    new_tenant,
    next_frame,
    probed,
    rc_message_id,
    send_sms,
    within_bound,
)
from tests.support import Received, WebhookReceiver, assert_error, eventually
from websockets.asyncio.client import connect

from gravity_webhooks import SignatureError, verify


async def test_every_surface_answers_as_the_contract_says(
    stack_process: RealStack,
    api: httpx.AsyncClient,
    rc: Accounts,
    receiver: WebhookReceiver,
) -> None:
    """Contract, the rest of it through the real stack: health of the four services, authentication and
    errors, tenants, API keys, apps (test webhook, rotation, re-send), the connection, message filters,
    the browser-style WebSocket token, and ingest's ordered checks."""
    async with httpx.AsyncClient(timeout=5) as http:
        for base in (
            stack_process.registry,
            stack_process.ingest,
            stack_process.realtime,
            stack_process.fanout,
        ):
            for path in ("/healthz", "/readyz"):
                r = await http.get(base + path)
                # realtime's readiness also counts its sockets: an addition, the contract's field is there
                assert r.status_code == 200 and r.json()["status"] == "ok", (base, path, r.text)

    # authentication: missing, malformed, unknown → 401 unauthorized; tenant keys are not admin
    assert_error(await api.get("/v1/apps"), 401, "unauthorized")
    assert_error(await api.get("/v1/apps", headers={"Authorization": "Basic x"}), 401, "unauthorized")
    assert_error(await api.get("/v1/apps", headers={"Authorization": "Bearer gsk_nope"}), 401, "unauthorized")
    tenant = await new_tenant(api, "surface")
    assert_error(await api.get("/v1/tenants", headers=tenant.auth), 401, "unauthorized")
    listed = (await api.get("/v1/tenants", headers=ADMIN)).json()["tenants"]
    [mine] = [t for t in listed if t["tenantId"] == tenant.tenant_id]
    assert set(mine) == {"tenantId", "name", "createdAt"} and TIMESTAMP.match(mine["createdAt"])

    # API keys: shown once, listed without the secret, lastUsedAt once used
    r = await api.post("/v1/api-keys", json={"name": "ci"}, headers=tenant.auth)
    assert r.status_code == 201 and set(r.json()) == {"keyId", "name", "apiKey", "createdAt"}
    ci = r.json()
    assert (await api.get("/v1/apps", headers={"Authorization": f"Bearer {ci['apiKey']}"})).status_code == 200
    keys = (await api.get("/v1/api-keys", headers=tenant.auth)).json()["apiKeys"]
    assert all(set(k) == {"keyId", "name", "createdAt", "lastUsedAt"} for k in keys)
    assert ci["apiKey"] not in str(keys)
    [used] = [k for k in keys if k["keyId"] == ci["keyId"]]
    assert used["lastUsedAt"] is not None and TIMESTAMP.match(used["lastUsedAt"])

    # the connection: 404 before, active after
    assert_error(await api.get("/v1/ringcentral/connection", headers=tenant.auth), 404, "not_found")
    account = tenant.rc = await rc()
    r = await api.put("/v1/ringcentral/connection", json=credentials(account), headers=tenant.auth)
    assert r.status_code == 200, r.text
    tenant.subscription_id = r.json()["subscriptionId"]
    connection = (await api.get("/v1/ringcentral/connection", headers=tenant.auth)).json()
    assert connection["status"] == "active" and connection["subscriptionId"] == tenant.subscription_id
    assert TIMESTAMP.match(connection["expiresAt"]) and TIMESTAMP.match(connection["connectedAt"])

    # apps: validation, no URL (test webhook 409), then a URL; GET never shows the secret
    assert_error(
        await api.post("/v1/apps", json={"name": "x", "webhookUrl": "not a url"}, headers=tenant.auth),
        422,
        "validation_error",
    )
    r = await api.post("/v1/apps", json={"name": "CRM"}, headers=tenant.auth)
    assert r.status_code == 201, r.text
    app = r.json()
    assert set(app) == {
        "appId",
        "tenantId",
        "name",
        "webhookUrl",
        "disabled",
        "createdAt",
        "updatedAt",
        "signingSecret",
    }
    assert app["webhookUrl"] is None and app["disabled"] is False and APP_ID.match(app["appId"])
    assert_error(
        await api.post(f"/v1/apps/{app['appId']}/test-webhook", headers=tenant.auth), 409, "conflict"
    )
    r = await api.put(
        f"/v1/apps/{app['appId']}", json={"webhookUrl": receiver.url("/surface")}, headers=tenant.auth
    )
    assert r.status_code == 200 and r.json()["webhookUrl"] == receiver.url("/surface")
    shown = (await api.get(f"/v1/apps/{app['appId']}", headers=tenant.auth)).json()
    assert "signingSecret" not in shown and shown["updatedAt"] >= shown["createdAt"]
    assert [a["appId"] for a in (await api.get("/v1/apps", headers=tenant.auth)).json()["apps"]] == [
        app["appId"]
    ]
    r = await api.post(f"/v1/apps/{app['appId']}/test-webhook", headers=tenant.auth)
    assert r.status_code == 200 and r.json() == {"ok": True, "status": 200, "body": "ok"}, r.text
    [test_hook] = receiver.received("/surface")
    verify(app["signingSecret"], test_hook.headers, test_hook.body)
    test_event = orjson.loads(test_hook.body)
    assert test_event["type"] == "test" and MESSAGE_ID.match(test_event["messageId"])

    # rotation: the next delivery verifies with the new secret and, for now, with the old one too
    r = await api.post(f"/v1/apps/{app['appId']}/rotate-secret", headers=tenant.auth)
    assert r.status_code == 200, r.text
    new_secret = r.json()["signingSecret"]
    assert new_secret.startswith("whsec_") and new_secret != app["signingSecret"]
    rotated = time.monotonic()
    tenant.app_id = app["appId"]

    def signed_anew(hook: Received) -> bool:
        try:
            verify(new_secret, hook.headers, hook.body)
        except SignatureError:
            return False
        return True

    probes = tenant.probes = Probes(tenant, receiver)
    await within_bound(rotated, lambda: probes.landed("/surface", signed_anew), "a new URL and secret")

    # ?token= for browsers; an SMS; its delivery signed with both secrets
    ws = await connect(stack_process.ws(f"?token={tenant.api_key}"), ping_interval=None)
    try:
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 5)) == {
            "type": "connected",
            "tenantId": tenant.tenant_id,
        }
        sent = await send_sms(tenant, "filters")
        frame = orjson.loads(await next_frame(ws, tenant))
    finally:
        await ws.close()
    assert frame["rcMessageId"] == sent["id"]

    def carrying(rc_id: str) -> list[Received]:
        return [h for h in receiver.received("/surface") if rc_message_id(h) == rc_id]

    [hook] = await eventually(lambda: carrying(sent["id"]), timeout=10)
    verify(new_secret, hook.headers, hook.body)
    verify(app["signingSecret"], hook.headers, hook.body)

    # a re-send on demand: 202, then the same message again, logged as a further attempt
    message_id = frame["messageId"]
    await eventually(lambda: has_delivery(api, tenant, message_id), timeout=10)
    r = await api.post(f"/v1/apps/{app['appId']}/deliveries/{message_id}/retry", headers=tenant.auth)
    assert r.status_code == 202, r.text
    [_, again] = await eventually(lambda: len(carrying(sent["id"])) >= 2 and carrying(sent["id"]), timeout=10)
    assert again.body == hook.body and again.headers["webhook-id"] == message_id
    assert_error(
        await api.post(f"/v1/apps/{app['appId']}/deliveries/msg_000000000000/retry", headers=tenant.auth),
        404,
        "not_found",
    )

    # messages: the object, filters, paging limits, unknown id
    async def all_stored() -> httpx.Response | None:
        """The inbound list once it holds the message and every probe (the last may still be on its way)."""
        params = {"direction": "inbound", "limit": 100}
        r = await api.get("/v1/sms/messages", params=params, headers=tenant.auth)
        listed = {m["rcMessageId"] for m in r.json()["messages"]}
        return r if listed == {sent["id"], *probed(tenant)} else None

    r = await eventually(all_stored, timeout=10)
    inbound = r.json()["messages"]
    [message] = [m for m in inbound if m["rcMessageId"] == sent["id"]]
    assert set(message) == {
        "messageId",
        "direction",
        "from",
        "to",
        "body",
        "status",
        "rcMessageId",
        "tenantId",
        "timestamp",
        "receivedAt",
    }
    assert TIMESTAMP.match(message["receivedAt"]) and TIMESTAMP.match(message["timestamp"])
    assert r.json()["nextCursor"] is None
    for params in ({"direction": "outbound"}, {"from": "+15550000000"}, {"to": "+15550000000"}):
        assert (await api.get("/v1/sms/messages", params=params, headers=tenant.auth)).json()[
            "messages"
        ] == []
    same_sender = {"from": message["from"], "limit": 100}  # every message here, the probes too, is from it
    r = await api.get("/v1/sms/messages", params=same_sender, headers=tenant.auth)
    assert r.json()["messages"] == inbound
    for bad in ({"limit": 0}, {"limit": 101}, {"direction": "sideways"}, {"since": "yesterday"}):
        assert_error(
            await api.get("/v1/sms/messages", params=bad, headers=tenant.auth), 422, "validation_error"
        )
    assert_error(await api.get("/v1/sms/messages/msg_000000000000", headers=tenant.auth), 404, "not_found")

    # ingest's checks, in order: handshake, size, shape, verification
    hook_url = stack_process.ingest + "/v1/webhooks/ringcentral"
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.post(hook_url, headers={"Validation-Token": "abc-123"})
        assert r.status_code == 200 and r.headers["validation-token"] == "abc-123" and r.content == b""
        assert r.headers["content-type"].startswith("application/json")
        assert (await http.post(hook_url, content=b"x" * (1024 * 1024 + 1))).status_code == 413
        assert (await http.post(hook_url, content=b"{not json")).status_code == 400
        wrong = {"Verification-Token": "wrong"}
        late = account.notification(tenant.subscription_id, account.add_message(text="forged"))
        assert (await http.post(hook_url, json=late, headers=wrong)).status_code == 401
