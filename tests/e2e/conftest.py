"""The real stack: the four services as separate processes, started the way `make run` starts them
(`python -m gravity_devstack run`, here pointed at the module's broker and a fresh database), driven only
through public interfaces. The RingCentral simulator connects each tenant and sends its SMS; a real webhook
receiver and real WebSocket clients observe.

Each module that asks for ``stack_process`` gets a stack of its own. Fanout has no public signal of the
apps it knows, so a change that must reach it within the contract's bound is shown by probes: fresh SMSes
the tenant sends until one is delivered as the change says (:class:`Probes`). Their bodies start with
:data:`PROBE`, and the helpers here leave them out of what tests compare.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from tests.simulators.ringcentral import RingCentralSimulator, running_ringcentral
from tests.support import Received, WebhookReceiver, eventually, free_port, running_receiver, wait_ready
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from gravity_events.settings import KafkaSettings

ADMIN = {"Authorization": "Bearer e2e-admin-token-" + "y" * 16}
TENANT_ID = re.compile(r"^tenant_[0-9a-f]{16}$")
APP_ID = re.compile(r"^app_[0-9a-f]{16}$")
MESSAGE_ID = re.compile(r"^msg_[0-9a-f]{12}$")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
PROPAGATION_SECONDS = 5.0
"""The contract's bound: a change answered by the API is in force everywhere within this many seconds."""
PROBE = "probe "
"""How the body of every probe SMS starts."""


@dataclass
class RealStack:
    """Addresses of the four running services."""

    registry: str
    ingest: str
    realtime: str
    fanout: str
    log: Path

    def ws(self, query: str = "") -> str:
        """The realtime WebSocket URL with ``query``."""
        return self.realtime.replace("http://", "ws://") + "/v1/ws" + query


@pytest.fixture(scope="module")
async def e2e_database(make_database: Callable[[], Awaitable[str]]) -> str:
    """A fresh database for the module's stack."""
    return await make_database()


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


Accounts = Callable[[], Awaitable[RingCentralSimulator]]


@pytest.fixture(scope="module")
async def rc() -> AsyncIterator[Accounts]:
    """A RingCentral account per tenant (each has its own message store, as real accounts do)."""
    async with contextlib.AsyncExitStack() as accounts:

        async def account() -> RingCentralSimulator:
            return await accounts.enter_async_context(running_ringcentral())

        yield account


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[WebhookReceiver]:
    """The module's webhook receiver; each tenant's app has a path of its own."""
    async with running_receiver() as r:
        yield r


@pytest.fixture(scope="module")
async def api(stack_process: RealStack) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the stack's registry."""
    async with httpx.AsyncClient(base_url=stack_process.registry, timeout=15) as client:
        yield client


@dataclass
class Tenant:
    """A tenant as its customer knows it: its key, its RingCentral account, its app and subscription."""

    tenant_id: str
    api_key: str
    auth: dict[str, str]
    rc: RingCentralSimulator | None = None
    app_id: str = ""
    secret: str = ""
    subscription_id: str = ""
    probes: Probes | None = None


def rc_message_id(request: Received) -> str:
    """The RingCentral id of the message a webhook request carries."""
    return str(orjson.loads(request.body)["rcMessageId"])


def hooks(receiver: WebhookReceiver, path: str) -> list[Received]:
    """What ``path`` received, probes left out."""
    return [r for r in receiver.received(path) if not orjson.loads(r.body)["body"].startswith(PROBE)]


@dataclass
class Probes:
    """Fresh SMSes of ``tenant``, sent until one is delivered as a change says it must be."""

    tenant: Tenant
    receiver: WebhookReceiver
    accepted: dict[str, float] = field(default_factory=dict)
    """rcMessageId of each probe → when ingest accepted it (``time.monotonic()``)."""

    async def landed(self, path: str, accept: Callable[[Received], bool] = lambda _: True) -> float | None:
        """When the earliest probe that reached ``path`` (and passes ``accept``) was accepted by ingest.

        None, after sending one more probe, while none has: call it from ``eventually``.
        """
        times = [
            self.accepted[rc_id]
            for r in self.receiver.received(path)
            if (rc_id := rc_message_id(r)) in self.accepted and accept(r)
        ]
        if times:
            return min(times)
        message = await send_sms(self.tenant, f"{PROBE}{len(self.accepted)}")
        self.accepted[message["id"]] = time.monotonic()
        return None


async def within_bound(since: float, check: Callable[[], Awaitable[float | None]], what: str) -> float:
    """Poll ``check`` until it reports the moment a change was seen in force (``time.monotonic()``); that
    moment must be within the contract's bound of ``since``, the API's answer. Return the seconds taken."""
    at = await eventually(check, timeout=PROPAGATION_SECONDS + 10, interval=0.2)
    took: float = at - since
    assert took <= PROPAGATION_SECONDS, f"{what}: in force {took:.2f} s after the API's answer"
    return took


async def new_tenant(api: httpx.AsyncClient, name: str) -> Tenant:
    """Create a tenant through the admin API."""
    r = await api.post("/v1/tenants", json={"name": name}, headers=ADMIN)
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"tenantId", "name", "apiKey", "createdAt"} and TENANT_ID.match(body["tenantId"])
    return Tenant(body["tenantId"], body["apiKey"], {"Authorization": f"Bearer {body['apiKey']}"})


def credentials(account: RingCentralSimulator) -> dict[str, str]:
    """What a customer PUTs to connect the simulated RingCentral account."""
    return {
        "serverUrl": account.server_url,
        "clientId": account.client_id,
        "clientSecret": account.client_secret,
        "jwt": "sim-jwt",
    }


async def go_live(api: httpx.AsyncClient, accounts: Accounts, receiver: WebhookReceiver, name: str) -> Tenant:
    """Tenant → app with a webhook → RingCentral connection: everything a customer does to go live.

    Returns once the app is shown in force at fanout, within the contract's bound of its creation.
    """
    tenant = await new_tenant(api, name)
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
    r = await api.put("/v1/ringcentral/connection", json=credentials(rc), headers=tenant.auth)
    assert r.status_code == 200, r.text  # the simulator's handshake against ingest succeeded
    connection = r.json()
    assert connection["status"] == "active"
    assert set(connection) >= {"status", "subscriptionId", "expiresAt", "serverUrl", "connectedAt"}
    tenant.subscription_id = connection["subscriptionId"]
    probes = tenant.probes = Probes(tenant, receiver)
    await within_bound(app_created, lambda: probes.landed(f"/{name}"), "a new app")
    return tenant


def probed(tenant: Tenant) -> set[str]:
    """The RingCentral ids of every probe ``tenant`` sent."""
    return set(tenant.probes.accepted) if tenant.probes is not None else set()


async def open_ws(stack: RealStack, tenant: Tenant, query: str = "") -> ClientConnection:
    """A WebSocket of ``tenant``, past its ``connected`` frame (retried while realtime learns a new key)."""

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


async def next_frame(ws: ClientConnection, tenant: Tenant, timeout: float = 10) -> str | bytes:
    """The next frame on ``ws`` that is not one of ``tenant``'s own probes."""
    mine = probed(tenant)
    while True:
        frame = await asyncio.wait_for(ws.recv(), timeout)
        event = orjson.loads(frame)
        if not (event.get("tenantId") == tenant.tenant_id and event.get("rcMessageId") in mine):
            return frame


async def send_sms(tenant: Tenant, text: str) -> dict[str, Any]:
    """RingCentral POSTs the instant-SMS notification; ingest answers 200 (retried while it learns the
    subscription, within the contract's 5 s)."""
    rc = tenant.rc
    assert rc is not None
    message = rc.add_message(text=text)

    async def accepted() -> bool:
        return (await rc.deliver(tenant.subscription_id, message)).status_code == 200

    await eventually(accepted, timeout=5)
    return message


async def has_delivery(api: httpx.AsyncClient, tenant: Tenant, message_id: str) -> bool:
    """Whether the deliveries log of ``tenant``'s app lists an attempt of ``message_id``."""
    r = await api.get(f"/v1/apps/{tenant.app_id}/deliveries", headers=tenant.auth)
    return any(d["messageId"] == message_id for d in r.json()["deliveries"])


async def app_deliveries(api: httpx.AsyncClient, tenant: Tenant, app_id: str) -> list[dict[str, Any]]:
    """The deliveries log of one of ``tenant``'s apps."""
    r = await api.get(f"/v1/apps/{app_id}/deliveries", headers=tenant.auth)
    assert r.status_code == 200, r.text
    deliveries: list[dict[str, Any]] = r.json()["deliveries"]
    return deliveries
