"""One SMS through the real stack: it reaches the tenant's webhook, WebSocket and API identically, and
nothing of one tenant's ever reaches another.

Read as a specification: each test names the promise of the contract it checks.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from tests.e2e.conftest import (
    MESSAGE_ID,
    Accounts,
    RealStack,
    go_live,
    has_delivery,
    hooks,
    next_frame,
    open_ws,
    probed,
    send_sms,
)
from tests.support import SMS_INBOUND_FIELDS, WebhookReceiver, assert_error, eventually
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from gravity_webhooks import verify


async def test_an_sms_reaches_webhook_websocket_and_the_api_identically(
    stack_process: RealStack,
    api: httpx.AsyncClient,
    rc: Accounts,
    receiver: WebhookReceiver,
) -> None:
    """Contract: connection flow, sms_inbound shape, webhook signing and headers, WebSocket frames, the
    messages API, the deliveries log; a RingCentral retry of the same notification is one message."""
    tenant = await go_live(api, rc, receiver, "golden")
    assert tenant.rc is not None
    [created] = tenant.rc.created_requests
    assert created["deliveryMode"]["address"] == stack_process.ingest + "/v1/webhooks/ringcentral"
    ws = await open_ws(stack_process, tenant)
    try:
        message = await send_sms(tenant, "Yes, I confirm")
        [hook] = await eventually(lambda: hooks(receiver, "/golden"), timeout=10)
        frame = await next_frame(ws, tenant)
    finally:
        await ws.close()

    # the webhook: signed per Standard Webhooks, the exact sms_inbound bytes
    verify(tenant.secret, hook.headers, hook.body)
    event = orjson.loads(hook.body)
    assert tuple(event) == SMS_INBOUND_FIELDS
    assert event["type"] == "sms_inbound" and MESSAGE_ID.match(event["messageId"])
    assert event["body"] == "Yes, I confirm" and event["rcMessageId"] == message["id"]
    assert event["from"] == "+15559876543" and event["to"] == "+15551234567"
    assert event["tenantId"] == tenant.tenant_id
    assert hook.headers["webhook-id"] == event["messageId"]
    assert hook.headers["content-type"] == "application/json"
    # the WebSocket frame is the same JSON, byte for byte
    assert (frame.encode() if isinstance(frame, str) else frame) == hook.body

    # the messages API
    r = await api.get(f"/v1/sms/messages/{event['messageId']}", headers=tenant.auth)
    assert r.status_code == 200
    stored = r.json()
    assert stored["direction"] == "inbound" and stored["status"] == "received"
    assert {k: stored[k] for k in ("messageId", "from", "to", "body", "rcMessageId", "tenantId")} == {
        k: event[k] for k in ("messageId", "from", "to", "body", "rcMessageId", "tenantId")
    }

    # the deliveries log shows the successful attempt (projected from fanout's records)
    async def logged() -> list[dict[str, Any]]:
        r = await api.get(f"/v1/apps/{tenant.app_id}/deliveries", headers=tenant.auth)
        return [d for d in r.json()["deliveries"] if d["messageId"] == event["messageId"]]

    [attempt] = await eventually(logged, timeout=10)
    assert attempt["status"] == "succeeded" and attempt["responseCode"] == 200 and attempt["attempt"] == 1

    # RingCentral retries the same notification: still one message, no second webhook
    assert (await tenant.rc.deliver(tenant.subscription_id, message)).status_code == 200
    marker = await send_sms(tenant, "marker")
    await eventually(lambda: len(hooks(receiver, "/golden")) >= 2, timeout=10)
    bodies = [orjson.loads(h.body)["body"] for h in hooks(receiver, "/golden")]
    assert bodies == ["Yes, I confirm", marker["subject"]]
    r = await api.get("/v1/sms/messages", params={"limit": 100}, headers=tenant.auth)
    listed = r.json()["messages"]
    assert [m["body"] for m in listed if m["rcMessageId"] not in probed(tenant)] == [
        "marker",
        "Yes, I confirm",
    ]
    assert len(listed) == 2 + len(probed(tenant))


async def test_one_tenant_cannot_reach_another_tenants_anything(
    stack_process: RealStack,
    api: httpx.AsyncClient,
    rc: Accounts,
    receiver: WebhookReceiver,
) -> None:
    """Contract (isolation): every id of tenant A, used with tenant B's key, is 404 on every route and on
    the WebSocket; B's lists and B's stream never show A's data."""
    a = await go_live(api, rc, receiver, "alpha")
    b = await go_live(api, rc, receiver, "beta")
    r = await api.post("/v1/api-keys", json={"name": "second"}, headers=a.auth)
    assert r.status_code == 201
    a_key_id = r.json()["keyId"]
    b_ws = await open_ws(stack_process, b)
    try:
        sent = await send_sms(a, "for alpha only")
        [hook] = await eventually(lambda: hooks(receiver, "/alpha"), timeout=10)
        a_msg = orjson.loads(hook.body)["messageId"]
        await eventually(lambda: has_delivery(api, a, a_msg), timeout=10)

        routes: list[tuple[str, str, dict[str, Any] | None]] = [
            ("GET", f"/v1/apps/{a.app_id}", None),
            ("PUT", f"/v1/apps/{a.app_id}", {"name": "stolen"}),
            ("POST", f"/v1/apps/{a.app_id}/rotate-secret", None),
            ("POST", f"/v1/apps/{a.app_id}/test-webhook", None),
            ("GET", f"/v1/apps/{a.app_id}/deliveries", None),
            ("POST", f"/v1/apps/{a.app_id}/deliveries/{a_msg}/retry", None),
            ("GET", f"/v1/sms/messages/{a_msg}", None),
            ("DELETE", f"/v1/api-keys/{a_key_id}", None),
            ("DELETE", f"/v1/apps/{a.app_id}", None),
        ]
        for method, path, body in routes:
            r = await api.request(method, path, json=body, headers=b.auth)
            assert r.status_code == 404, (method, path, r.status_code, r.text)
            assert_error(r, 404, "not_found")

        # B's lists show only B's things
        apps = (await api.get("/v1/apps", headers=b.auth)).json()["apps"]
        assert [x["appId"] for x in apps] == [b.app_id]
        keys = (await api.get("/v1/api-keys", headers=b.auth)).json()["apiKeys"]
        assert a_key_id not in {k["keyId"] for k in keys}
        messages = (await api.get("/v1/sms/messages", params={"limit": 100}, headers=b.auth)).json()[
            "messages"
        ]
        assert {m["rcMessageId"] for m in messages} == probed(b)  # B's own probes, nothing else
        # resuming B's stream after A's message is refused before the upgrade
        with pytest.raises(InvalidStatus) as refused:
            await connect(stack_process.ws(f"?since={a_msg}"), additional_headers=b.auth)
        assert refused.value.response.status_code == 404
        # nothing of A's reached B: B's next frame is B's own marker
        b_marker = await send_sms(b, "for beta")
        frame = orjson.loads(await next_frame(b_ws, b))
        assert frame["tenantId"] == b.tenant_id and frame["rcMessageId"] == b_marker["id"]
    finally:
        await b_ws.close()
    [beta_hook] = await eventually(lambda: hooks(receiver, "/beta"), timeout=10)
    assert orjson.loads(beta_hook.body)["rcMessageId"] == b_marker["id"]  # B's app got B's message only
    # A's app and key are untouched by B's attempts
    r = await api.get(f"/v1/apps/{a.app_id}", headers=a.auth)
    assert r.status_code == 200 and r.json()["name"] == "alpha CRM"
    assert sent["id"] == orjson.loads(hook.body)["rcMessageId"]
