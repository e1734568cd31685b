"""The product as a user meets it: the four services as separate processes, started the way `make run`
starts them (`python -m gravity_devstack run`, here pointed at the session's broker and a fresh database),
driven only through public interfaces. The RingCentral simulator connects the tenant and sends the SMS; a
real webhook receiver and real WebSocket clients observe.

Read as a specification: each test names the promise of ``../shared/contract.md`` it checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from tests.simulators.receiver import WebhookReceiver, running_receiver
from tests.simulators.ringcentral import RingCentralSimulator, running_ringcentral
from tests.support import eventually, free_port, wait_ready
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from gravity_events.settings import KafkaSettings
from gravity_webhooks import verify

ADMIN = {"Authorization": "Bearer e2e-admin-token-" + "y" * 16}
TENANT_ID = re.compile(r"^tenant_[0-9a-f]{16}$")
APP_ID = re.compile(r"^app_[0-9a-f]{16}$")
MESSAGE_ID = re.compile(r"^msg_[0-9a-f]{12}$")
PROPAGATION_SECONDS = 5.0


@dataclass
class RealStack:
    """Addresses of the four running services."""

    registry: str
    ingest: str
    realtime: str
    fanout: str
    log: Path

    def ws(self, query: str = "") -> str:
        return self.realtime.replace("http://", "ws://") + "/v1/ws" + query


@pytest.fixture(scope="module")
async def stack_process(
    kafka_settings: KafkaSettings, tmp_path_factory: pytest.TempPathFactory, e2e_database: str
) -> AsyncIterator[RealStack]:
    """`gravity-dev run` as a child process; SIGINT (Ctrl-C) at the end must stop it cleanly."""
    data = tmp_path_factory.mktemp("stack")
    ports = {name: free_port() for name in ("registry", "ingest", "realtime", "fanout")}
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.kafka_bootstrap_servers,
        "KAFKA_ENABLE_IDEMPOTENCE": "false",
        "KAFKA_SESSION_TIMEOUT_MS": str(kafka_settings.kafka_session_timeout_ms),
        "DATABASE_URL": e2e_database,
        "GRAVITY_ADMIN_TOKEN": ADMIN["Authorization"].removeprefix("Bearer "),
        "GRAVITY_PUBLIC_URL": f"http://127.0.0.1:{ports['ingest']}",
        "GRAVITY_REGISTRY_CONSUMER_GROUP": "e2e-registry-" + secrets.token_hex(4),
        "GRAVITY_FANOUT_CONSUMER_GROUP": "e2e-fanout-" + secrets.token_hex(4),
        "GRAVITY_LOG_LEVEL": "warning",
        **{f"GRAVITY_{name.upper()}_PORT": str(port) for name, port in ports.items()},
    }
    log = data / "stack.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gravity_devstack", "run", "--data-dir", str(data)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    try:
        for url in urls.values():
            await wait_ready(url, proc=proc, log=log, timeout=120)
        yield RealStack(**urls, log=log)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, log.read_text()[-3000:]


@pytest.fixture(scope="module")
async def e2e_database(make_database: Callable[[], Awaitable[str]]) -> str:
    return await make_database()


@pytest.fixture(scope="module")
async def rc() -> AsyncIterator[Callable[[], Awaitable[RingCentralSimulator]]]:
    """A RingCentral account per tenant (each has its own message store, as real accounts do)."""
    async with contextlib.AsyncExitStack() as accounts:

        async def account() -> RingCentralSimulator:
            return await accounts.enter_async_context(running_ringcentral())

        yield account


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with running_receiver() as r:
        yield r


@pytest.fixture(scope="module")
async def api(stack_process: RealStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack_process.registry, timeout=15) as client:
        yield client


@dataclass
class Tenant:
    tenant_id: str
    api_key: str
    auth: dict[str, str]
    rc: RingCentralSimulator | None = None
    app_id: str = ""
    secret: str = ""
    subscription_id: str = ""


async def _tenant(api: httpx.AsyncClient, name: str) -> Tenant:
    r = await api.post("/v1/tenants", json={"name": name}, headers=ADMIN)
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"tenantId", "name", "apiKey", "createdAt"} and TENANT_ID.match(body["tenantId"])
    return Tenant(body["tenantId"], body["apiKey"], {"Authorization": f"Bearer {body['apiKey']}"})


Accounts = Callable[[], Awaitable[RingCentralSimulator]]


def _credentials(account: RingCentralSimulator) -> dict[str, str]:
    """What a customer PUTs to connect the simulated RingCentral account."""
    return {
        "serverUrl": account.server_url,
        "clientId": account.client_id,
        "clientSecret": account.client_secret,
        "jwt": "sim-jwt",
    }


async def _go_live(
    api: httpx.AsyncClient, accounts: Accounts, receiver: WebhookReceiver, name: str
) -> Tenant:
    """Tenant → app with a webhook → RingCentral connection: everything a customer does to go live."""
    tenant = await _tenant(api, name)
    rc = tenant.rc = await accounts()
    r = await api.post(
        "/v1/apps",
        json={"name": f"{name} CRM", "webhookUrl": receiver.url(f"/{name}")},
        headers=tenant.auth,
    )
    assert r.status_code == 201, r.text
    app = r.json()
    assert APP_ID.match(app["appId"]) and app["signingSecret"].startswith("whsec_")
    tenant.app_id, tenant.secret = app["appId"], app["signingSecret"]
    app_created = time.monotonic()
    r = await api.put("/v1/ringcentral/connection", json=_credentials(rc), headers=tenant.auth)
    assert r.status_code == 200, r.text  # the simulator's handshake against ingest succeeded
    connection = r.json()
    assert connection["status"] == "active"
    assert set(connection) >= {"status", "subscriptionId", "expiresAt", "serverUrl", "connectedAt"}
    tenant.subscription_id = connection["subscriptionId"]
    # The contract's bound: a new app is in force everywhere within 5 s of the API's answer. Fanout has no
    # public "I know this app" signal, so the first SMS goes out once that bound has passed.
    await asyncio.sleep(max(0.0, PROPAGATION_SECONDS - (time.monotonic() - app_created)))
    return tenant


async def _ws(stack: RealStack, tenant: Tenant, query: str = "") -> ClientConnection:
    async def attempt() -> ClientConnection | None:
        try:
            return await connect(
                stack.ws(query), additional_headers=tenant.auth, ping_interval=None, max_size=2**20
            )
        except InvalidStatus as exc:
            if exc.response.status_code == 401:  # the new key is on its way to realtime (≤ 5 s)
                return None
            raise

    ws = await eventually(attempt, timeout=5)
    hello = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
    assert hello == {"type": "connected", "tenantId": tenant.tenant_id}
    return ws


async def _send(tenant: Tenant, text: str) -> dict[str, Any]:
    """RingCentral POSTs the instant-SMS notification; ingest answers 200 (retried while it learns the
    subscription, within the contract's 5 s)."""
    rc = tenant.rc
    assert rc is not None
    message = rc.add_message(text=text)

    async def accepted() -> bool:
        return (await rc.deliver(tenant.subscription_id, message)).status_code == 200

    await eventually(accepted, timeout=5)
    return message


async def test_an_sms_reaches_webhook_websocket_and_the_api_identically(
    stack_process: RealStack,
    api: httpx.AsyncClient,
    rc: Accounts,
    receiver: WebhookReceiver,
) -> None:
    """Contract: connection flow, sms_inbound shape, webhook signing and headers, WebSocket frames, the
    messages API, the deliveries log; a RingCentral retry of the same notification is one message."""
    tenant = await _go_live(api, rc, receiver, "golden")
    assert tenant.rc is not None
    [created] = tenant.rc.created_requests
    assert created["deliveryMode"]["address"] == stack_process.ingest + "/v1/webhooks/ringcentral"
    ws = await _ws(stack_process, tenant)
    try:
        message = await _send(tenant, "Yes, I confirm")
        [hook] = await eventually(lambda: receiver.received("/golden"), timeout=10)
        frame = await asyncio.wait_for(ws.recv(), 10)
    finally:
        await ws.close()

    # the webhook: signed per Standard Webhooks, the exact sms_inbound bytes
    verify(tenant.secret, hook.headers, hook.body)
    event = orjson.loads(hook.body)
    assert list(event) == ["type", "messageId", "from", "to", "body", "rcMessageId", "tenantId", "timestamp"]
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
    marker = await _send(tenant, "marker")
    await eventually(lambda: len(receiver.received("/golden")) >= 2, timeout=10)
    bodies = [orjson.loads(h.body)["body"] for h in receiver.received("/golden")]
    assert bodies == ["Yes, I confirm", marker["subject"]]
    r = await api.get("/v1/sms/messages", params={"limit": 10}, headers=tenant.auth)
    assert [m["body"] for m in r.json()["messages"]] == ["marker", "Yes, I confirm"]


async def test_one_tenant_cannot_reach_another_tenants_anything(
    stack_process: RealStack,
    api: httpx.AsyncClient,
    rc: Accounts,
    receiver: WebhookReceiver,
) -> None:
    """Contract (isolation): every id of tenant A, used with tenant B's key, is 404 on every route and on
    the WebSocket; B's lists and B's stream never show A's data."""
    a = await _go_live(api, rc, receiver, "alpha")
    b = await _go_live(api, rc, receiver, "beta")
    r = await api.post("/v1/api-keys", json={"name": "second"}, headers=a.auth)
    assert r.status_code == 201
    a_key_id = r.json()["keyId"]
    b_ws = await _ws(stack_process, b)
    try:
        sent = await _send(a, "for alpha only")
        [hook] = await eventually(lambda: receiver.received("/alpha"), timeout=10)
        a_msg = orjson.loads(hook.body)["messageId"]
        await eventually(lambda: _has_delivery(api, a, a_msg), timeout=10)

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
            assert set(r.json()) == {"error"} and set(r.json()["error"]) >= {"code", "message"}, r.text

        # B's lists show only B's things
        apps = (await api.get("/v1/apps", headers=b.auth)).json()["apps"]
        assert [x["appId"] for x in apps] == [b.app_id]
        keys = (await api.get("/v1/api-keys", headers=b.auth)).json()["apiKeys"]
        assert a_key_id not in {k["keyId"] for k in keys}
        messages = (await api.get("/v1/sms/messages", headers=b.auth)).json()["messages"]
        assert messages == []
        # resuming B's stream after A's message is refused before the upgrade
        with pytest.raises(InvalidStatus) as refused:
            await connect(stack_process.ws(f"?since={a_msg}"), additional_headers=b.auth)
        assert refused.value.response.status_code == 404
        # nothing of A's reached B: B's next frame is B's own marker
        b_marker = await _send(b, "for beta")
        frame = orjson.loads(await asyncio.wait_for(b_ws.recv(), 10))
        assert frame["tenantId"] == b.tenant_id and frame["rcMessageId"] == b_marker["id"]
    finally:
        await b_ws.close()
    [beta_hook] = await eventually(lambda: receiver.received("/beta"), timeout=10)
    assert orjson.loads(beta_hook.body)["rcMessageId"] == b_marker["id"]  # B's app got B's message only
    # A's app and key are untouched by B's attempts
    r = await api.get(f"/v1/apps/{a.app_id}", headers=a.auth)
    assert r.status_code == 200 and r.json()["name"] == "alpha CRM"
    assert sent["id"] == orjson.loads(hook.body)["rcMessageId"]


async def _has_delivery(api: httpx.AsyncClient, tenant: Tenant, message_id: str) -> bool:
    r = await api.get(f"/v1/apps/{tenant.app_id}/deliveries", headers=tenant.auth)
    return any(d["messageId"] == message_id for d in r.json()["deliveries"])


async def _deliveries(api: httpx.AsyncClient, tenant: Tenant, app_id: str) -> list[dict[str, Any]]:
    r = await api.get(f"/v1/apps/{app_id}/deliveries", headers=tenant.auth)
    assert r.status_code == 200, r.text
    deliveries: list[dict[str, Any]] = r.json()["deliveries"]
    return deliveries


async def test_timeouts_and_changes_keep_the_contracts_bounds(
    stack_process: RealStack,
    api: httpx.AsyncClient,
    rc: Accounts,
    receiver: WebhookReceiver,
) -> None:
    """Contract: an attempt times out after 5 s without delaying another app; an app's new URL, a deleted
    app, a revoked API key (REST, new and open WebSockets) and a deleted connection are each in force
    within 5 s of the API's answer."""
    tenant = await _go_live(api, rc, receiver, "timing")
    receiver.behave("/timing-hang", hang=True)
    r = await api.post(
        "/v1/apps", json={"name": "hangs", "webhookUrl": receiver.url("/timing-hang")}, headers=tenant.auth
    )
    assert r.status_code == 201, r.text
    hanging = r.json()["appId"]
    await asyncio.sleep(PROPAGATION_SECONDS)  # the bound for the new app

    # 5-second timeout per attempt; the other app is not kept waiting
    await _send(tenant, "one")
    [fast] = await eventually(lambda: receiver.received("/timing"), timeout=10)
    [held] = await eventually(lambda: receiver.received("/timing-hang"), timeout=10)
    assert fast.at < held.at + 1.0  # delivered while the other endpoint was still hanging

    async def timed_out() -> dict[str, Any] | None:
        return next(iter(await _deliveries(api, tenant, hanging)), None)

    attempt = await eventually(timed_out, timeout=15)
    assert attempt["status"] == "failed" and attempt["responseCode"] is None
    assert "timed out" in attempt["error"]
    # the client's timer starts a moment before the attempt's clock does: 4,999.6 ms was seen
    assert 4_900 <= attempt["durationMs"] < 6_500, attempt

    # an app's new webhookUrl, and a deleted app: in force within 5 s of the answer
    r = await api.put(
        f"/v1/apps/{hanging}", json={"webhookUrl": receiver.url("/timing-moved")}, headers=tenant.auth
    )
    assert r.status_code == 200, r.text
    r = await api.delete(f"/v1/apps/{tenant.app_id}", headers=tenant.auth)
    assert r.status_code == 204, r.text
    changed = time.monotonic()
    await asyncio.sleep(max(0.0, PROPAGATION_SECONDS - (time.monotonic() - changed)))
    two = await _send(tenant, "two")

    def arrived(path: str, rc_id: str) -> bool:
        return any(orjson.loads(h.body)["rcMessageId"] == rc_id for h in receiver.received(path))

    # the new message goes to the new URL (so may the first message's retries: they use the current URL)
    await eventually(lambda: arrived("/timing-moved", two["id"]), timeout=10)
    assert not arrived("/timing-hang", two["id"])
    assert [orjson.loads(h.body)["body"] for h in receiver.received("/timing")] == ["one"]  # deleted app

    # a revoked API key: REST refuses it at once, its open socket is closed and new ones are refused ≤ 5 s
    r = await api.post("/v1/api-keys", json={"name": "revoked soon"}, headers=tenant.auth)
    assert r.status_code == 201, r.text
    key = r.json()
    second = Tenant(tenant.tenant_id, key["apiKey"], {"Authorization": f"Bearer {key['apiKey']}"})
    ws = await _ws(stack_process, second)
    r = await api.delete(f"/v1/api-keys/{key['keyId']}", headers=tenant.auth)
    assert r.status_code == 204, r.text
    revoked = time.monotonic()
    assert (await api.get("/v1/apps", headers=second.auth)).status_code == 401
    await asyncio.wait_for(ws.wait_closed(), PROPAGATION_SECONDS)
    assert time.monotonic() - revoked <= PROPAGATION_SECONDS
    await asyncio.sleep(max(0.0, PROPAGATION_SECONDS - (time.monotonic() - revoked)))
    with pytest.raises(InvalidStatus) as refused:
        await connect(stack_process.ws(), additional_headers=second.auth)
    assert refused.value.response.status_code == 401

    # a deleted connection: events for its subscription (a late or replayed POST) are refused within 5 s
    rc_account = tenant.rc
    assert rc_account is not None
    sub = rc_account.subscriptions[tenant.subscription_id]
    r = await api.delete("/v1/ringcentral/connection", headers=tenant.auth)
    assert r.status_code == 204, r.text
    disconnected = time.monotonic()
    assert tenant.subscription_id not in rc_account.subscriptions  # deleted at RingCentral too
    await asyncio.sleep(max(0.0, PROPAGATION_SECONDS - (time.monotonic() - disconnected)))
    late = rc_account.notification(
        tenant.subscription_id, rc_account.add_message(text="after the disconnect")
    )
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.post(sub.address, json=late, headers={"Verification-Token": sub.verification_token})
    assert r.status_code == 401, r.text


TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _error(r: httpx.Response, status: int, code: str) -> None:
    """The contract's error shape, with this status and code."""
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


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
    _error(await api.get("/v1/apps"), 401, "unauthorized")
    _error(await api.get("/v1/apps", headers={"Authorization": "Basic x"}), 401, "unauthorized")
    _error(await api.get("/v1/apps", headers={"Authorization": "Bearer gsk_nope"}), 401, "unauthorized")
    tenant = await _tenant(api, "surface")
    _error(await api.get("/v1/tenants", headers=tenant.auth), 401, "unauthorized")
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

    # apps: validation, no URL (test webhook 409), then a URL; GET never shows the secret
    _error(
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
    _error(await api.post(f"/v1/apps/{app['appId']}/test-webhook", headers=tenant.auth), 409, "conflict")
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

    # the connection: 404 before, active after
    _error(await api.get("/v1/ringcentral/connection", headers=tenant.auth), 404, "not_found")
    account = tenant.rc = await rc()
    r = await api.put("/v1/ringcentral/connection", json=_credentials(account), headers=tenant.auth)
    assert r.status_code == 200, r.text
    tenant.subscription_id = r.json()["subscriptionId"]
    connection = (await api.get("/v1/ringcentral/connection", headers=tenant.auth)).json()
    assert connection["status"] == "active" and connection["subscriptionId"] == tenant.subscription_id
    assert TIMESTAMP.match(connection["expiresAt"]) and TIMESTAMP.match(connection["connectedAt"])
    await asyncio.sleep(PROPAGATION_SECONDS)  # the bound for the new URL and secret

    # ?token= for browsers; an SMS; its delivery signed with both secrets
    ws = await connect(stack_process.ws(f"?token={tenant.api_key}"), ping_interval=None)
    try:
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 5)) == {
            "type": "connected",
            "tenantId": tenant.tenant_id,
        }
        sent = await _send(tenant, "filters")
        frame = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
    finally:
        await ws.close()
    assert frame["rcMessageId"] == sent["id"]
    hook = await eventually(lambda: receiver.received("/surface")[1:], timeout=10)
    verify(new_secret, hook[0].headers, hook[0].body)
    verify(app["signingSecret"], hook[0].headers, hook[0].body)

    # a re-send on demand: 202, then the same message again, logged as a further attempt
    message_id = frame["messageId"]
    tenant.app_id = app["appId"]
    await eventually(lambda: _has_delivery(api, tenant, message_id), timeout=10)
    r = await api.post(f"/v1/apps/{app['appId']}/deliveries/{message_id}/retry", headers=tenant.auth)
    assert r.status_code == 202, r.text
    again = await eventually(lambda: receiver.received("/surface")[2:], timeout=10)
    assert again[0].body == hook[0].body and again[0].headers["webhook-id"] == message_id
    _error(
        await api.post(f"/v1/apps/{app['appId']}/deliveries/msg_000000000000/retry", headers=tenant.auth),
        404,
        "not_found",
    )

    # messages: the object, filters, paging limits, unknown id
    r = await api.get("/v1/sms/messages", params={"direction": "inbound", "limit": 10}, headers=tenant.auth)
    [message] = r.json()["messages"]
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
    assert (
        len(
            (await api.get("/v1/sms/messages", params={"from": message["from"]}, headers=tenant.auth)).json()[
                "messages"
            ]
        )
        == 1
    )
    for bad in ({"limit": 0}, {"limit": 101}, {"direction": "sideways"}, {"since": "yesterday"}):
        _error(await api.get("/v1/sms/messages", params=bad, headers=tenant.auth), 422, "validation_error")
    _error(await api.get("/v1/sms/messages/msg_000000000000", headers=tenant.auth), 404, "not_found")

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
