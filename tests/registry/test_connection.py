"""The RingCentral connection, against the simulator, with ingest serving the real webhook address.

connect → handshake → events stored; refused credentials → 502 and nothing stored; reconnect and
disconnect; and the keeper: renewal, recreation after Blacklisted, token refresh and re-login, 429
back-off, backfill after an outage with no duplicates, two registry copies never renewing twice, and the
keeper's checks and the connections by status on /metrics.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from prometheus_client.parser import text_string_to_metric_families
from tests.registry.conftest import ADMIN_TOKEN, registry_settings
from tests.simulators.ringcentral import SMS_FILTER, RingCentralSimulator, running_ringcentral
from tests.support import assert_error, eventually, serve, wait_ready

from gravity_events.settings import KafkaSettings
from gravity_ingest.app import create_app as create_ingest
from gravity_ingest.settings import Settings as IngestSettings
from gravity_registry.app import create_app as create_registry

FAST_KEEPER = {
    "GRAVITY_REGISTRY_KEEPER_POLL_SECONDS": 0.1,
    "GRAVITY_RC_CHECK_INTERVAL_SECONDS": 0.3,
    "GRAVITY_RC_RETRY_SECONDS": 0.3,
    "GRAVITY_RC_SUBSCRIPTION_EXPIRES_IN": 3600,
    "GRAVITY_RC_RENEW_BEFORE_SECONDS": 60,
    "GRAVITY_RC_TOKEN_MARGIN_SECONDS": 60,
}


@dataclass
class Gateway:
    """Ingest on a real port, a registry client, the simulator, and how to reach the database."""

    ingest_url: str
    client: httpx.AsyncClient
    sim: RingCentralSimulator
    database_url: str

    async def tenant(self) -> dict[str, Any]:
        r = await self.client.post(
            "/v1/tenants", json={"name": "rc"}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        body: dict[str, Any] = r.json()
        body["auth"] = {"Authorization": f"Bearer {body['apiKey']}"}
        return body

    def credentials(self, **overrides: str) -> dict[str, str]:
        body = {
            "serverUrl": self.sim.server_url,
            "clientId": self.sim.client_id,
            "clientSecret": self.sim.client_secret,
            "jwt": "sim-jwt",
        }
        body.update(overrides)
        return body

    async def connect(self, tenant: dict[str, Any]) -> dict[str, Any]:
        r = await self.client.put(
            "/v1/ringcentral/connection", json=self.credentials(), headers=tenant["auth"]
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def connection(self, tenant: dict[str, Any]) -> dict[str, Any]:
        r = await self.client.get("/v1/ringcentral/connection", headers=tenant["auth"])
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def delivered(self, subscription_id: str, message: dict[str, Any]) -> httpx.Response:
        """POST the notification until ingest accepts it (it learns new subscriptions within seconds)."""

        async def accepted() -> httpx.Response | None:
            r = await self.sim.deliver(subscription_id, message)
            return r if r.status_code == 200 else None

        return await eventually(accepted, timeout=5)

    async def messages(self, tenant: dict[str, Any], count: int) -> list[dict[str, Any]]:
        """Wait until the tenant has at least ``count`` stored messages; return them."""

        async def listed() -> list[dict[str, Any]]:
            r = await self.client.get("/v1/sms/messages?limit=100", headers=tenant["auth"])
            found: list[dict[str, Any]] = r.json()["messages"]
            return found if len(found) >= count else []

        return await eventually(listed, timeout=15)


@contextlib.asynccontextmanager
async def registry_client(settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_registry(settings)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://registry", timeout=30) as client:
            await wait_ready(client=client, timeout=30)
            yield client


@contextlib.asynccontextmanager
async def running_ingest(kafka: KafkaSettings) -> AsyncIterator[str]:
    ingest = create_ingest(
        IngestSettings(KAFKA_BOOTSTRAP_SERVERS=kafka.kafka_bootstrap_servers, KAFKA_ENABLE_IDEMPOTENCE=False)
    )
    async with serve(ingest) as port, httpx.AsyncClient() as c:
        url = f"http://127.0.0.1:{port}"
        await wait_ready(url, client=c, timeout=30)
        yield url


@pytest.fixture(scope="module")
async def ingest_url(kafka_settings: KafkaSettings) -> AsyncIterator[str]:
    async with running_ingest(kafka_settings) as url:
        yield url


@pytest.fixture
async def gateway(
    kafka_settings: KafkaSettings, make_database: Callable[[], Awaitable[str]], ingest_url: str
) -> AsyncIterator[Gateway]:
    """A fresh simulator and registry (own database) per test; ingest is shared."""
    database_url = await make_database()
    settings = registry_settings(kafka_settings, database_url, GRAVITY_PUBLIC_URL=ingest_url, **FAST_KEEPER)
    async with running_ringcentral() as sim, registry_client(settings) as client:
        yield Gateway(ingest_url, client, sim, database_url)


async def test_connect_handshake_and_first_event(gateway: Gateway) -> None:
    tenant = await gateway.tenant()
    assert_error(
        await gateway.client.get("/v1/ringcentral/connection", headers=tenant["auth"]), 404, "not_found"
    )
    connected = await gateway.connect(tenant)
    assert set(connected) == {
        "status",
        "subscriptionId",
        "expiresAt",
        "serverUrl",
        "connectedAt",
        "lastError",
    }
    assert connected["status"] == "active" and connected["serverUrl"] == gateway.sim.server_url
    assert connected["subscriptionId"] in gateway.sim.subscriptions

    [request] = gateway.sim.created_requests
    assert request["eventFilters"] == [SMS_FILTER]
    assert request["expiresIn"] == 3600 and "expiresIn" not in request["deliveryMode"]
    mode = request["deliveryMode"]
    assert mode["transportType"] == "WebHook"
    assert mode["address"] == gateway.ingest_url + "/v1/webhooks/ringcentral"
    assert re.fullmatch(r"[A-Za-z0-9_-]{32,}", mode["verificationToken"])
    [jwt_login] = gateway.sim.calls_to("POST", "/oauth/token")
    assert jwt_login.detail["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"

    message = gateway.sim.add_message(text="first event")
    await gateway.delivered(connected["subscriptionId"], message)
    [stored] = await gateway.messages(tenant, 1)
    assert stored["rcMessageId"] == message["id"] and stored["body"] == "first event"
    assert (await gateway.connection(tenant))["status"] == "active"


async def test_secrets_are_encrypted_at_rest_and_never_returned(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tenant = await gateway.tenant()
    connected = await gateway.connect(tenant)
    conn = await asyncpg.connect(gateway.database_url)
    try:
        row = dict(await conn.fetchrow("SELECT * FROM rc_connections"))
    finally:
        await conn.close()
    stored = " ".join(str(v) for v in row.values())
    issued = list(gateway.sim.access_tokens) + list(gateway.sim.refresh_tokens)
    token = gateway.sim.subscriptions[connected["subscriptionId"]].verification_token
    for secret in [gateway.sim.client_secret, "sim-jwt", token, *issued]:
        assert secret not in stored
        assert secret not in str(connected)
        assert secret not in caplog.text


async def test_refused_credentials_answer_502_and_store_nothing(gateway: Gateway) -> None:
    tenant = await gateway.tenant()
    for bad in [{"jwt": "not-the-jwt"}, {"clientSecret": "wrong"}]:
        r = await gateway.client.put(
            "/v1/ringcentral/connection", json=gateway.credentials(**bad), headers=tenant["auth"]
        )
        body = assert_error(r, 502, "ringcentral_error")
        assert body["error"]["details"]["ringcentralStatus"] in (400, 401)
        assert body["error"]["details"]["ringcentralError"]["error"] in ("invalid_grant", "invalid_client")
    assert_error(
        await gateway.client.get("/v1/ringcentral/connection", headers=tenant["auth"]), 404, "not_found"
    )
    assert gateway.sim.subscriptions == {} and gateway.sim.created_requests == []
    # a platform that cannot be reached is a 502 too
    r = await gateway.client.put(
        "/v1/ringcentral/connection",
        json=gateway.credentials(serverUrl="http://127.0.0.1:9"),
        headers=tenant["auth"],
    )
    assert assert_error(r, 502, "ringcentral_error")["error"]["details"]["ringcentralStatus"] is None


async def test_connection_validation(gateway: Gateway) -> None:
    tenant = await gateway.tenant()
    for body, field in [
        ({**gateway.credentials(), "jwt": ""}, "jwt"),
        ({k: v for k, v in gateway.credentials().items() if k != "clientId"}, "clientId"),
        ({**gateway.credentials(), "serverUrl": "ftp://x"}, "serverUrl"),
    ]:
        r = await gateway.client.put("/v1/ringcentral/connection", json=body, headers=tenant["auth"])
        error = assert_error(r, 422, "validation_error")
        assert field in [d["field"] for d in error["error"]["details"]]
    assert_error(
        await gateway.client.put("/v1/ringcentral/connection", json=gateway.credentials()),
        401,
        "unauthorized",
    )


async def test_reconnect_replaces_and_deletes_the_old_subscription(gateway: Gateway) -> None:
    tenant = await gateway.tenant()
    first = await gateway.connect(tenant)
    old_sub = gateway.sim.subscriptions[first["subscriptionId"]]
    second = await gateway.connect(tenant)
    assert second["subscriptionId"] != first["subscriptionId"]
    assert first["subscriptionId"] in gateway.sim.deleted_subscriptions
    assert list(gateway.sim.subscriptions) == [second["subscriptionId"]]
    # the old subscription's events are refused within 5 s, the new one's accepted
    stale = gateway.sim.add_message()
    async with httpx.AsyncClient() as c:

        async def refused() -> bool:
            r = await c.post(
                old_sub.address,
                json=gateway.sim.notification(old_sub.id, stale),
                headers={"Verification-Token": old_sub.verification_token},
            )
            return r.status_code == 401

        await eventually(refused, timeout=5)
    fresh = gateway.sim.add_message(text="new")
    await gateway.delivered(second["subscriptionId"], fresh)

    async def stored_new() -> bool:
        return fresh["id"] in {m["rcMessageId"] for m in await gateway.messages(tenant, 1)}

    await eventually(stored_new, timeout=10)


async def test_disconnect_refuses_events(gateway: Gateway) -> None:
    tenant = await gateway.tenant()
    connected = await gateway.connect(tenant)
    sub = gateway.sim.subscriptions[connected["subscriptionId"]]
    await gateway.delivered(sub.id, gateway.sim.add_message())
    r = await gateway.client.delete("/v1/ringcentral/connection", headers=tenant["auth"])
    assert r.status_code == 204
    assert sub.id in gateway.sim.deleted_subscriptions
    assert_error(
        await gateway.client.get("/v1/ringcentral/connection", headers=tenant["auth"]), 404, "not_found"
    )
    assert_error(
        await gateway.client.delete("/v1/ringcentral/connection", headers=tenant["auth"]), 404, "not_found"
    )
    late = gateway.sim.add_message()
    async with httpx.AsyncClient() as c:

        async def refused() -> bool:
            r = await c.post(
                sub.address,
                json=gateway.sim.notification(sub.id, late),
                headers={"Verification-Token": sub.verification_token},
            )
            return r.status_code == 401

        await eventually(refused, timeout=5)


async def test_disconnect_when_ringcentral_refuses_still_disconnects(gateway: Gateway) -> None:
    tenant = await gateway.tenant()
    connected = await gateway.connect(tenant)
    gateway.sim.throttle(100, retry_after=60)
    r = await gateway.client.delete("/v1/ringcentral/connection", headers=tenant["auth"])
    assert r.status_code == 204
    gateway.sim.throttle(0)
    assert connected["subscriptionId"] not in gateway.sim.deleted_subscriptions  # RingCentral said 429
    assert_error(
        await gateway.client.get("/v1/ringcentral/connection", headers=tenant["auth"]), 404, "not_found"
    )


async def test_recreate_after_blacklisted_and_backfill_what_was_missed(gateway: Gateway) -> None:
    tenant = await gateway.tenant()
    connected = await gateway.connect(tenant)
    delivered = gateway.sim.add_message(text="delivered")
    await gateway.delivered(connected["subscriptionId"], delivered)
    await gateway.messages(tenant, 1)

    gateway.sim.blacklist(connected["subscriptionId"])
    missed = [gateway.sim.add_message(text=f"missed {i}") for i in range(3)]  # never notified

    async def recreated() -> dict[str, Any] | None:
        now = await gateway.connection(tenant)
        return now if now["subscriptionId"] != connected["subscriptionId"] else None

    after = await eventually(recreated, timeout=10)
    assert after["status"] == "active" and after["subscriptionId"] in gateway.sim.subscriptions
    assert connected["subscriptionId"] in gateway.sim.deleted_subscriptions
    stored = await gateway.messages(tenant, 4)
    assert sorted(m["rcMessageId"] for m in stored) == sorted(m["id"] for m in [delivered, *missed])
    # the new subscription delivers, and a message both backfilled and notified is stored once
    await gateway.delivered(after["subscriptionId"], missed[0])
    await gateway.delivered(after["subscriptionId"], gateway.sim.add_message(text="after"))
    stored = await gateway.messages(tenant, 5)
    assert len(stored) == 5 and len({m["rcMessageId"] for m in stored}) == 5


async def test_blacklisted_status_while_recreation_fails(gateway: Gateway) -> None:
    tenant = await gateway.tenant()
    connected = await gateway.connect(tenant)
    gateway.sim.fail_subscription_creates(10_000)
    gateway.sim.blacklist(connected["subscriptionId"])

    async def blacklisted() -> dict[str, Any] | None:
        now = await gateway.connection(tenant)
        return now if now["status"] == "blacklisted" else None

    shown = await eventually(blacklisted, timeout=5)
    assert "503" in shown["lastError"] and shown["subscriptionId"] == connected["subscriptionId"]
    gateway.sim.fail_subscription_creates(0)  # RingCentral recovers: the keeper recreates

    async def recovered() -> dict[str, Any] | None:
        now = await gateway.connection(tenant)
        return (
            now
            if now["status"] == "active" and now["subscriptionId"] != connected["subscriptionId"]
            else None
        )

    assert (await eventually(recovered, timeout=5))["lastError"] is None


async def test_access_token_is_refreshed_before_it_expires(gateway: Gateway) -> None:
    gateway.sim.access_token_ttl = 61  # the keeper's margin is 60 s: refresh due a second after connect
    tenant = await gateway.tenant()
    await gateway.connect(tenant)
    await eventually(
        lambda: any(c.detail.get("grant_type") == "refresh_token" for c in gateway.sim.log), timeout=5
    )
    assert not [c for c in gateway.sim.log if c.status == 401]  # refreshed ahead of time, never refused


async def test_expired_token_is_refreshed_then_jwt_login(gateway: Gateway) -> None:
    tenant = await gateway.tenant()
    await gateway.connect(tenant)

    def grants() -> list[str]:
        return [
            c.detail["grant_type"] for c in gateway.sim.calls_to("POST", "/oauth/token") if c.status == 200
        ]

    gateway.sim.expire_access_tokens()  # RingCentral revoked them early: 401 on the next call
    await eventually(lambda: "refresh_token" in grants(), timeout=5)
    gateway.sim.revoke_refresh_tokens()
    gateway.sim.expire_access_tokens()
    jwt_logins = grants().count("urn:ietf:params:oauth:grant-type:jwt-bearer")
    await eventually(
        lambda: grants().count("urn:ietf:params:oauth:grant-type:jwt-bearer") > jwt_logins, timeout=5
    )
    await eventually(lambda: _status_is(gateway, tenant, "active"), timeout=5)


async def _status_is(gateway: Gateway, tenant: dict[str, Any], status: str) -> bool:
    return (await gateway.connection(tenant))["status"] == status


async def test_429_is_honoured(gateway: Gateway) -> None:
    tenant = await gateway.tenant()
    await gateway.connect(tenant)
    gateway.sim.throttle(1, retry_after=2)
    await eventually(lambda: any(c.status == 429 for c in gateway.sim.log), timeout=5)
    [limited] = [c for c in gateway.sim.log if c.status == 429]
    await eventually(lambda: [c for c in gateway.sim.log if c.at > limited.at], timeout=10)
    following = [c for c in gateway.sim.log if c.at > limited.at]
    assert following[0].at - limited.at >= 2.0  # nothing was asked before Retry-After passed
    assert (await gateway.connection(tenant))["status"] == "active"


async def test_wrong_jwt_later_shows_error(gateway: Gateway) -> None:
    tenant = await gateway.tenant()
    await gateway.connect(tenant)
    gateway.sim.valid_jwts.clear()  # the JWT was revoked in the developer console
    gateway.sim.revoke_refresh_tokens()
    gateway.sim.expire_access_tokens()

    async def errored() -> dict[str, Any] | None:
        now = await gateway.connection(tenant)
        return now if now["status"] == "error" else None

    shown = await eventually(errored, timeout=5)
    assert "invalid_grant" in shown["lastError"]


async def test_renewal_and_two_copies_never_double_renew(
    kafka_settings: KafkaSettings, make_database: Callable[[], Awaitable[str]], ingest_url: str
) -> None:
    database_url = await make_database()
    renew_fast = {
        **FAST_KEEPER,
        "GRAVITY_RC_SUBSCRIPTION_EXPIRES_IN": 60,
        "GRAVITY_RC_RENEW_BEFORE_SECONDS": 58.5,
    }
    settings = registry_settings(kafka_settings, database_url, GRAVITY_PUBLIC_URL=ingest_url, **renew_fast)
    async with (
        running_ringcentral() as sim,
        registry_client(settings) as one,
        registry_client(settings.model_copy()) as two,
    ):
        gateway = Gateway(ingest_url, one, sim, database_url)
        tenant = await gateway.tenant()
        connected = await gateway.connect(tenant)
        renewals = f"/subscription/{connected['subscriptionId']}/renew"
        await eventually(lambda: len(sim.calls_to("POST", renewals)) >= 4, timeout=20)
        times = [c.at for c in sim.calls_to("POST", renewals)]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # each renewal moves the next check 1.5 s ahead; a double renewal would show a gap near zero
        assert min(gaps) >= 1.0, gaps
        shown = await gateway.connection(tenant)
        assert shown["expiresAt"] > connected["expiresAt"] and shown["status"] == "active"
        c2 = Gateway(ingest_url, two, sim, database_url)
        assert (await c2.connection(tenant))["subscriptionId"] == connected["subscriptionId"]


async def test_backfill_after_the_gateway_was_down(
    kafka_settings: KafkaSettings, make_database: Callable[[], Awaitable[str]], ingest_url: str
) -> None:
    database_url = await make_database()
    settings = registry_settings(kafka_settings, database_url, GRAVITY_PUBLIC_URL=ingest_url, **FAST_KEEPER)
    async with running_ringcentral() as sim:
        async with registry_client(settings) as client:
            gateway = Gateway(ingest_url, client, sim, database_url)
            tenant = await gateway.tenant()
            connected = await gateway.connect(tenant)
            before = sim.add_message(text="before")
            await gateway.delivered(connected["subscriptionId"], before)
            await gateway.messages(tenant, 1)
        # the registry is down: RingCentral's deliveries fail, the messages wait in its store
        missed = [sim.add_message(text=f"while down {i}") for i in range(5)]
        async with registry_client(settings) as client:
            gateway = Gateway(ingest_url, client, sim, database_url)
            stored = await gateway.messages(tenant, 6)
            assert sorted(m["rcMessageId"] for m in stored) == sorted(m["id"] for m in [before, *missed])
            assert (await gateway.connection(tenant))["subscriptionId"] == connected["subscriptionId"]
            # RingCentral's late retries of the same events do not duplicate them
            for message in missed[:2]:
                await gateway.delivered(connected["subscriptionId"], message)
            marker = sim.add_message(text="marker")
            await gateway.delivered(connected["subscriptionId"], marker)
            stored = await gateway.messages(tenant, 7)
            assert len(stored) == 7 and len({m["rcMessageId"] for m in stored}) == 7


async def test_an_event_refused_right_after_connecting_is_backfilled(gateway: Gateway) -> None:
    tenant = await gateway.tenant()
    gateway.sim.add_message(text="before the connection")  # older than the connection: not imported
    await gateway.connect(tenant)
    refused = gateway.sim.add_message(text="sent before ingest knew the subscription")  # never delivered
    [stored] = await gateway.messages(tenant, 1)
    assert stored["rcMessageId"] == refused["id"]
    assert len(await gateway.messages(tenant, 1)) == 1


async def _keeper_metrics(client: httpx.AsyncClient) -> tuple[dict[str, float], dict[str, float]]:
    """The registry's checks counter by outcome and connections gauge by status, as /metrics shows them."""
    checks: dict[str, float] = {}
    connections: dict[str, float] = {}
    text = (await client.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "gravity_registry_keeper_checks_total":
                checks[sample.labels["outcome"]] = sample.value
            elif sample.name == "gravity_registry_connections":
                connections[sample.labels["status"]] = sample.value
    return checks, connections


async def test_keeper_checks_and_connections_by_status_are_on_metrics(gateway: Gateway) -> None:
    healthy, troubled = await gateway.tenant(), await gateway.tenant()
    await gateway.connect(healthy)
    connected = await gateway.connect(troubled)
    checks_before, _ = await _keeper_metrics(gateway.client)
    # one tenant's subscription is blacklisted and cannot be recreated yet: its checks fail
    gateway.sim.fail_subscription_creates(10_000)
    gateway.sim.blacklist(connected["subscriptionId"])

    async def statuses() -> Counter[str]:
        return Counter([(await gateway.connection(t))["status"] for t in (healthy, troubled)])

    async def gauge_matches(expected: Counter[str]) -> dict[str, float] | None:
        """The gauge once it shows ``expected`` (it is set every keeper round, so it lags a poll)."""
        _, connections = await _keeper_metrics(gateway.client)
        wanted = {status: float(expected.get(status, 0)) for status in connections}
        return connections if connections == wanted and await statuses() == expected else None

    await eventually(lambda: _status_is(gateway, troubled, "blacklisted"), timeout=5)
    troubled_now = await statuses()
    assert troubled_now == Counter(active=1, blacklisted=1)
    shown = await eventually(lambda: gauge_matches(troubled_now), timeout=5)
    checks, _ = await _keeper_metrics(gateway.client)
    assert checks["error"] > checks_before.get("error", 0), "the failed checks are counted as errors"
    # labels come from the documented vocabularies only: never a tenant or subscription id
    assert set(checks) <= {"ok", "renewed", "recreated", "token_refreshed", "error"}, checks
    assert set(shown) == {"active", "renewing", "blacklisted", "expired", "error"}, shown

    gateway.sim.fail_subscription_creates(0)  # RingCentral recovers: the keeper recreates the subscription
    await eventually(lambda: _status_is(gateway, troubled, "active"), timeout=5)

    async def recreation_counted() -> dict[str, float] | None:
        now, _ = await _keeper_metrics(gateway.client)
        return now if now["recreated"] > checks_before.get("recreated", 0) else None

    await eventually(recreation_counted, timeout=5)
    recovered = await statuses()
    assert recovered == Counter(active=2)
    await eventually(lambda: gauge_matches(recovered), timeout=5)
