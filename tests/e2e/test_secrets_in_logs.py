"""No secret the stack handles ever reaches a log line, even at ``GRAVITY_LOG_LEVEL=debug``.

The stack is `gravity-dev run` as a child process (as ``stack_process`` in the conftest starts it), but
with debug logging, so every service says as much as it ever will, and owned by this module so the test
can stop it and then read everything it wrote. Through the public surface only, the test makes the stack
handle every kind of secret: API keys (a tenant's first, a second one, a revoked one), an app's signing
secret and its rotated successor, a development subscription's verification token, a RingCentral
connection's client secret and JWT, the access and refresh tokens the simulated RingCentral issues, the
verification token the registry gives RingCentral, and ``GRAVITY_SECRET_KEY``. It also presents wrong
ones (a bad API key, a wrong verification token, a wrong client secret and JWT), since a presented
credential may be a real one mistyped. Every request path that might log is taken: signed webhook
deliveries, WebSockets with ``?token=`` good and bad, ingest's 401/413/400, the registry's 401/404/422/502.

Then the stack is stopped and every line of its combined output, of any log file in its data folder, and
of this session's broker and database logs, is searched for each value. The admin token is the documented
development value and is not looked for.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.requests import Request
from starlette.responses import Response
from tests.e2e.conftest import ADMIN, Probes, RealStack, Tenant, new_tenant, rc_message_id, send_sms
from tests.simulators.ringcentral import RingCentralSimulator
from tests.support import (
    Received,
    WebhookReceiver,
    assert_error,
    eventually,
    free_port,
    notification,
    running_receiver,
    serve,
    wait_ready,
)
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from gravity_events.settings import KafkaSettings
from gravity_webhooks import SignatureError, verify

HOOK = "/v1/webhooks/ringcentral"


class RecordingRingCentral(RingCentralSimulator):
    """The simulator, remembering every access and refresh token it issued (it forgets a refresh token
    once used, and the gateway may refresh at any time)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.issued: set[str] = set()

    async def token(self, request: Request) -> Response:
        response = await super().token(request)
        if response.status_code == 200:
            answer = orjson.loads(bytes(response.body))
            self.issued |= {answer["access_token"], answer["refresh_token"]}
        return response


@dataclass
class OwnStack:
    """`gravity-dev run` on a data folder of its own; :meth:`stop` ends it (once) the way Ctrl-C does."""

    urls: RealStack
    data: Path
    proc: subprocess.Popen[bytes]
    exit_code: int | None = None

    def stop(self) -> int:
        """SIGINT, then wait for every service and the supervisor to exit; the supervisor's exit status."""
        if self.exit_code is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.exit_code = self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.exit_code = self.proc.wait(10)
        return self.exit_code


@pytest.fixture(scope="module")
async def stack(
    kafka_settings: KafkaSettings,
    tmp_path_factory: pytest.TempPathFactory,
    make_database: Callable[[], Awaitable[str]],
) -> AsyncIterator[OwnStack]:
    """The real stack at debug level, on the module's broker and a fresh database, stopped by the test
    (or at the end, if the test did not get that far)."""
    data = tmp_path_factory.mktemp("stack")
    ports = {name: free_port() for name in ("registry", "ingest", "realtime", "fanout")}
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.kafka_bootstrap_servers,
        "KAFKA_ENABLE_IDEMPOTENCE": "false",
        "KAFKA_SESSION_TIMEOUT_MS": str(kafka_settings.kafka_session_timeout_ms),
        "DATABASE_URL": await make_database(),
        "GRAVITY_ADMIN_TOKEN": ADMIN["Authorization"].removeprefix("Bearer "),
        "GRAVITY_PUBLIC_URL": f"http://127.0.0.1:{ports['ingest']}",
        "GRAVITY_REGISTRY_CONSUMER_GROUP": "e2e-secrets-registry-" + secrets.token_hex(4),
        "GRAVITY_FANOUT_CONSUMER_GROUP": "e2e-secrets-fanout-" + secrets.token_hex(4),
        "GRAVITY_LOG_LEVEL": "debug",  # the most any service ever logs
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
    own = OwnStack(RealStack(**urls, log=log), data, proc)
    try:
        for url in urls.values():
            await wait_ready(url, proc=proc, log=log, timeout=120)
        yield own
    finally:
        await asyncio.to_thread(own.stop)


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[WebhookReceiver]:
    """The apps' webhook endpoint."""
    async with running_receiver() as r:
        yield r


@pytest.fixture(scope="module")
async def account() -> AsyncIterator[RecordingRingCentral]:
    """A RingCentral account with credentials as long and random as real ones, so that finding one in a
    log cannot be a coincidence."""
    sim = RecordingRingCentral(
        client_id="rc-client-" + secrets.token_hex(8), client_secret="rcsec-" + secrets.token_urlsafe(32)
    )
    jwt = f"eyJhbGciOiJSUzI1NiJ9.{secrets.token_urlsafe(96)}.{secrets.token_urlsafe(64)}"
    sim.valid_jwts = {jwt}
    async with serve(sim.app(), lifespan="off") as port:
        sim.port = port
        yield sim


@dataclass
class Secrets:
    """Every secret value the test made the stack handle, by what it is."""

    values: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, value: str) -> str:
        """Remember ``value`` as ``name``; return it."""
        assert len(value) >= 16, f"{name} is too short to be searched for without false matches"
        self.values[name] = value
        return value

    def mask(self, line: str) -> str:
        """``line`` with every secret replaced by its name."""
        for name, value in self.values.items():
            line = line.replace(value, f"[{name}]")
        return line


def log_files(stack: OwnStack, basetemp: Path) -> Iterator[Path]:
    """Everything the stack's processes logged: the supervisor's combined output (every service's
    stdout and stderr, prefixed with its name), any log file in the data folder, and the logs the
    session's broker and database write under the test run's temporary folder."""
    yield stack.urls.log
    for path in sorted(basetemp.rglob("*")):
        if path == stack.urls.log or not path.is_file():
            continue
        if path.suffix == ".log" or path.parent.name in ("log", "logs", "pg_log"):
            yield path


def leaks(files: Iterator[Path], found: Secrets) -> list[str]:
    """``file:line: <masked line>`` for each line holding a secret, naming which secrets it holds."""
    hits = []
    for path in files:
        text = path.read_text(errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            names = [name for name, value in found.values.items() if value in line]
            if names:
                hits.append(f"{path}:{number}: {', '.join(names)}: {found.mask(line)[:400]}")
    return hits


@pytest.mark.timeout(300)  # stack start (about a minute), the walk through the surface, stop and scan
async def test_no_secret_the_stack_handles_reaches_its_logs(
    stack: OwnStack,
    receiver: WebhookReceiver,
    account: RecordingRingCentral,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Security: API keys, signing secrets, verification tokens, RingCentral client secret, JWT, access
    and refresh tokens, ``GRAVITY_SECRET_KEY``, and credentials presented wrongly, appear in no log line
    the stack writes at debug level, through every path that handles them."""
    urls = stack.urls
    found = Secrets()
    found.add(
        "GRAVITY_SECRET_KEY",
        os.environ.get("GRAVITY_SECRET_KEY") or (stack.data / "dev-secret-key").read_text().strip(),
    )
    async with (
        httpx.AsyncClient(base_url=urls.registry, timeout=15) as api,
        httpx.AsyncClient(base_url=urls.ingest, timeout=15) as ingest,
    ):
        await walk_the_surface(urls, api, ingest, receiver, account, found)

    # what RingCentral issued and was given: tokens, and each verification token of a subscription
    for n, token in enumerate(sorted(account.issued)):
        found.add(f"RingCentral token {n}", token)
    # the client credentials as the token request's HTTP Basic header carries them
    basic = f"{account.client_id}:{account.client_secret}".encode()
    found.add("RingCentral Basic credential", base64.b64encode(basic).decode())
    for n, created in enumerate(account.created_requests):
        found.add(f"RingCentral verification token {n}", created["deliveryMode"]["verificationToken"])
    assert account.issued and account.created_requests  # the connection really was made

    code = await asyncio.to_thread(stack.stop)
    assert code == 0, urls.log.read_text()[-3000:]
    files = list(log_files(stack, tmp_path_factory.getbasetemp()))
    assert urls.log.stat().st_size > 0
    hits = leaks(iter(files), found)
    assert not hits, f"{len(hits)} log line(s) hold a secret:\n" + "\n".join(hits[:40])


async def walk_the_surface(
    urls: RealStack,
    api: httpx.AsyncClient,
    ingest: httpx.AsyncClient,
    receiver: WebhookReceiver,
    account: RecordingRingCentral,
    found: Secrets,
) -> None:
    """Make the stack create, receive, check and refuse every kind of secret; add each to ``found``."""
    # API keys: the tenant's first, a second one (used, then revoked, then presented again), a bad one
    tenant = await new_tenant(api, "secrets")
    found.add("first API key", tenant.api_key)
    r = await api.post("/v1/api-keys", json={"name": "ci"}, headers=tenant.auth)
    assert r.status_code == 201, r.text
    second = r.json()
    second_auth = {"Authorization": f"Bearer {found.add('second API key', second['apiKey'])}"}
    assert (await api.get("/v1/api-keys/me", headers=second_auth)).status_code == 200
    r = await api.delete(f"/v1/api-keys/{second['keyId']}", headers=tenant.auth)
    assert r.status_code == 204, r.text
    assert_error(await api.get("/v1/apps", headers=second_auth), 401, "unauthorized")
    bad_key = found.add("presented bad API key", "gsk_" + secrets.token_urlsafe(32))
    assert_error(
        await api.get("/v1/apps", headers={"Authorization": f"Bearer {bad_key}"}), 401, "unauthorized"
    )

    # the RingCentral connection: invalid (422, with the secrets in the refused body), refused by
    # RingCentral (502: wrong client secret, then wrong JWT), then made
    jwt = found.add("RingCentral JWT", next(iter(account.valid_jwts)))
    good = {
        "serverUrl": account.server_url,
        "clientId": account.client_id,
        "clientSecret": found.add("RingCentral client secret", account.client_secret),
        "jwt": jwt,
    }
    put = "/v1/ringcentral/connection"
    r = await api.put(put, json={**good, "serverUrl": "not a url"}, headers=tenant.auth)
    assert_error(r, 422, "validation_error")
    wrong_secret = found.add("presented wrong client secret", "rcsec-" + secrets.token_urlsafe(32))
    r = await api.put(put, json={**good, "clientSecret": wrong_secret}, headers=tenant.auth)
    assert r.status_code == 502, r.text
    wrong_jwt = found.add("presented wrong JWT", f"eyJhbGciOiJSUzI1NiJ9.{secrets.token_urlsafe(96)}.x")
    r = await api.put(put, json={**good, "jwt": wrong_jwt}, headers=tenant.auth)
    assert r.status_code == 502, r.text
    for response in await asyncio.gather(  # neither answer repeats what was presented
        api.get(put, headers=tenant.auth), api.get("/v1/apps", headers=tenant.auth)
    ):
        assert found.mask(response.text) == response.text, found.mask(response.text)
    r = await api.put(put, json=good, headers=tenant.auth)
    assert r.status_code == 200, r.text
    assert found.mask(r.text) == r.text, found.mask(r.text)
    tenant.rc, tenant.subscription_id = account, r.json()["subscriptionId"]

    # an app: its signing secret; a test webhook and probes signed with it
    r = await api.post(
        "/v1/apps", json={"name": "CRM", "webhookUrl": receiver.url("/secrets")}, headers=tenant.auth
    )
    assert r.status_code == 201, r.text
    tenant.app_id, tenant.secret = r.json()["appId"], found.add("signing secret", r.json()["signingSecret"])
    r = await api.post(f"/v1/apps/{tenant.app_id}/test-webhook", headers=tenant.auth)
    assert r.status_code == 200, r.text
    probes = tenant.probes = Probes(tenant, receiver)
    await eventually(lambda: probes.landed("/secrets"), timeout=20, interval=0.2)

    # the rotated secret: an SMS's delivery verifies with it
    r = await api.post(f"/v1/apps/{tenant.app_id}/rotate-secret", headers=tenant.auth)
    assert r.status_code == 200, r.text
    rotated = found.add("rotated signing secret", r.json()["signingSecret"])
    await websockets_and_a_signed_delivery(urls, tenant, receiver, rotated, bad_key, second_auth)

    # ingest: the right verification token (above, by RingCentral), a wrong one, none, too large, broken
    wrong_token = found.add("presented wrong verification token", secrets.token_urlsafe(32))
    forged = account.notification(tenant.subscription_id, account.add_message(text="forged"))
    assert_error(
        await ingest.post(HOOK, json=forged, headers={"Verification-Token": wrong_token}), 401, "unauthorized"
    )
    assert (await ingest.post(HOOK, json=forged)).status_code == 401
    right = {"Verification-Token": account.subscriptions[tenant.subscription_id].verification_token}
    assert (await ingest.post(HOOK, content=b"x" * (1024 * 1024 + 1), headers=right)).status_code == 413
    assert (await ingest.post(HOOK, content=b"{not json", headers=right)).status_code == 400

    # a development subscription (its verification token), for a tenant of its own
    dev = await new_tenant(api, "secrets-dev")
    found.add("dev tenant's API key", dev.api_key)
    r = await api.post("/v1/dev/subscriptions", json={"tenantId": dev.tenant_id}, headers=ADMIN)
    assert r.status_code == 201, r.text
    dev_sub = r.json()
    dev_token = {"Verification-Token": found.add("dev verification token", dev_sub["verificationToken"])}
    sms = notification(dev_sub["subscriptionId"])

    async def dev_accepted() -> bool:  # the new subscription reaches ingest within 5 s
        return (await ingest.post(HOOK, json=sms, headers=dev_token)).status_code == 200

    await eventually(dev_accepted, timeout=10)
    r = await ingest.post(HOOK, json=sms, headers={"Verification-Token": wrong_token})
    assert_error(r, 401, "unauthorized")

    # the registry's refusals: 404 and 422 with a key, and one stored message to read back
    assert_error(await api.get("/v1/apps/app_0000000000000000", headers=tenant.auth), 404, "not_found")
    assert_error(await api.get("/v1/sms/messages/msg_000000000000", headers=tenant.auth), 404, "not_found")
    assert_error(
        await api.get("/v1/sms/messages", params={"limit": 0}, headers=tenant.auth), 422, "validation_error"
    )
    assert_error(
        await api.post("/v1/apps", json={"name": "x", "webhookUrl": "not a url"}, headers=tenant.auth),
        422,
        "validation_error",
    )

    async def dev_stored() -> list[dict[str, Any]]:
        r = await api.get("/v1/sms/messages", headers=dev.auth)
        messages: list[dict[str, Any]] = r.json()["messages"]
        return messages

    await eventually(dev_stored, timeout=10)


async def websockets_and_a_signed_delivery(
    urls: RealStack,
    tenant: Tenant,
    receiver: WebhookReceiver,
    rotated: str,
    bad_key: str,
    revoked_auth: dict[str, str],
) -> None:
    """WebSockets refused (a bad ``?token=``, a revoked key in the header) and accepted (the first key as
    ``?token=`` and in the header), and an SMS both the socket and the webhook receive, the webhook's
    signed with the rotated secret."""
    for query, headers in ((f"?token={bad_key}", {}), ("", revoked_auth)):
        with pytest.raises(InvalidStatus) as refused:
            await connect(urls.ws(query), additional_headers=headers, ping_interval=None)
        assert refused.value.response.status_code == 401

    async def opened() -> Any:  # realtime may still be learning the key (≤ 5 s)
        try:
            return await connect(urls.ws(f"?token={tenant.api_key}"), ping_interval=None)
        except InvalidStatus as exc:
            if exc.response.status_code == 401:
                return None
            raise

    ws = await eventually(opened, timeout=10)
    # the header, as server-side clients send the key: accepted too (the key is known by now)
    by_header = await connect(urls.ws(), additional_headers=tenant.auth, ping_interval=None)
    try:
        assert orjson.loads(await asyncio.wait_for(by_header.recv(), 5))["type"] == "connected"
    finally:
        await by_header.close()
    try:
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "connected"
        probes = tenant.probes
        assert probes is not None

        def signed_anew(hook: Received) -> bool:
            try:
                verify(rotated, hook.headers, hook.body)
            except SignatureError:  # not yet signed with the new secret
                return False
            return True

        # the rotation is in force at fanout within the contract's bound
        await eventually(lambda: probes.landed("/secrets", signed_anew), timeout=20, interval=0.2)
        sent = await send_sms(tenant, "a message with a rotated secret")

        async def framed() -> bool:
            frame = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            return frame.get("rcMessageId") == sent["id"]

        await eventually(framed, timeout=15)
    finally:
        await ws.close()
    [hook] = await eventually(
        lambda: [h for h in receiver.received("/secrets") if rc_message_id(h) == sent["id"]], timeout=15
    )
    verify(rotated, hook.headers, hook.body)
