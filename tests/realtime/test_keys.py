"""A key works on the WebSocket the moment the API returned it: realtime asks the registry about a key the
change stream has not brought yet, once per key, cached, rate-limited, and never for a revoked key.

Realtime asks ``GET /v1/api-keys/me`` (the key as bearer → ``{"keyId", "tenantId"}``). The lookup tests
that count calls run against a stand-in registry on loopback that answers it for keys the test registers
(keys that never appear on the change stream, so only the lookup can know them); the last test runs
against the real registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from tests.realtime.harness import Registry, close_code, hello, realtime_settings, refused, running_realtime
from tests.support import eventually, publish_events, serve
from websockets.asyncio.client import connect

from gravity_events import topics
from gravity_events.models import ApiKeyRevoked
from gravity_events.settings import KafkaSettings

LOOKUP = "/v1/api-keys/me"


class StandInRegistry:
    """Answers ``GET /v1/api-keys/me`` for the keys in :attr:`keys`, counting the calls; :attr:`gate`
    holds the answers back while cleared, :attr:`failing` makes it answer 500."""

    def __init__(self) -> None:
        self.keys: dict[str, tuple[str, str]] = {}
        self.calls: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.failing = False
        self.app = Starlette(routes=[Route(LOOKUP, self.me)])

    def new_key(self) -> tuple[str, str, str]:
        """A key only this registry knows: (apiKey, keyId, tenantId)."""
        api_key = "gsk_" + secrets.token_urlsafe(32)
        key_id, tenant_id = "key_" + secrets.token_hex(8), "tenant_" + secrets.token_hex(8)
        self.keys[api_key] = (key_id, tenant_id)
        return api_key, key_id, tenant_id

    async def me(self, request: Request) -> Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        self.calls.append(token)
        await self.gate.wait()
        if self.failing:
            return JSONResponse({"error": {"code": "internal", "message": "down"}}, 500)
        found = self.keys.get(token)
        if found is None:
            return JSONResponse(
                {"error": {"code": "unauthorized", "message": "the API key is not valid"}}, 401
            )
        key_id, tenant_id = found
        return JSONResponse({"keyId": key_id, "tenantId": tenant_id, "name": "ws", "createdAt": "x"})


@pytest.fixture
async def stand_in() -> AsyncIterator[tuple[StandInRegistry, str]]:
    registry = StandInRegistry()
    async with serve(registry.app) as port:
        yield registry, f"http://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def _realtime(
    kafka: KafkaSettings, registry_url: str, **overrides: Any
) -> AsyncIterator[tuple[Any, str]]:
    async with running_realtime(realtime_settings(kafka, registry_url, **overrides)) as (app, port):
        yield app, f"ws://127.0.0.1:{port}/v1/ws"


async def test_a_key_the_stream_has_not_brought_is_asked_of_the_registry_once(
    kafka_settings: KafkaSettings, stand_in: tuple[StandInRegistry, str]
) -> None:
    registry, registry_url = stand_in
    async with _realtime(kafka_settings, registry_url) as (app, url):
        api_key, _, tenant_id = registry.new_key()
        registry.gate.clear()  # every upgrade waits on the one lookup
        pending = [asyncio.create_task(hello(url, api_key)) for _ in range(5)]
        await eventually(lambda: len(registry.calls) == 1, timeout=5)
        registry.gate.set()
        socks = await asyncio.gather(*pending)
        assert app.state.registry_keys.requests == 1 and len(registry.calls) == 1
        ws = await hello(f"{url}?token={api_key}")  # cached
        assert len(registry.calls) == 1
        for sock in [*socks, ws]:
            await sock.close()
        # the tenant is the registry's: the connected frame names it
        async with connect(url, additional_headers={"Authorization": f"Bearer {api_key}"}) as sock:
            assert orjson.loads(await asyncio.wait_for(sock.recv(), 5))["tenantId"] == tenant_id


async def test_a_refused_key_is_cached_too(
    kafka_settings: KafkaSettings, stand_in: tuple[StandInRegistry, str]
) -> None:
    registry, registry_url = stand_in
    async with _realtime(kafka_settings, registry_url) as (_, url):
        bad = "gsk_" + secrets.token_urlsafe(32)
        for _ in range(3):
            status, _, body = await refused(url, bad)
            assert status == 401 and body["error"]["code"] == "unauthorized"
        assert registry.calls == [bad]


async def test_lookups_are_rate_limited_for_all_keys_together(
    kafka_settings: KafkaSettings, stand_in: tuple[StandInRegistry, str]
) -> None:
    registry, registry_url = stand_in
    overrides = {"GRAVITY_REALTIME_KEY_LOOKUPS_PER_SECOND": 0.001, "GRAVITY_REALTIME_KEY_LOOKUP_BURST": 2}
    async with _realtime(kafka_settings, registry_url, **overrides) as (_, url):
        for _ in range(2):
            assert (await refused(url, "gsk_" + secrets.token_urlsafe(32)))[0] == 401
        # the bucket is empty: a key that may be valid is neither asked about nor called invalid
        api_key, _, _ = registry.new_key()
        status, headers, body = await refused(url, api_key)
        assert status == 503 and body["error"]["code"] == "unavailable" and int(headers["retry-after"]) > 0
        assert len(registry.calls) == 2


async def test_a_registry_that_cannot_answer_is_503_not_401(
    kafka_settings: KafkaSettings, stand_in: tuple[StandInRegistry, str]
) -> None:
    registry, registry_url = stand_in
    async with _realtime(kafka_settings, registry_url) as (_, url):
        api_key, _, _ = registry.new_key()
        registry.failing = True
        assert (await refused(url, api_key))[0] == 503
        registry.failing = False  # not cached: the next attempt asks again and gets in
        ws = await hello(url, api_key)
        assert len(registry.calls) == 2
        await ws.close()


async def test_a_revoked_key_is_refused_at_once_and_forgotten(
    kafka_settings: KafkaSettings, stand_in: tuple[StandInRegistry, str]
) -> None:
    registry, registry_url = stand_in
    async with _realtime(kafka_settings, registry_url) as (app, url):
        api_key, key_id, tenant_id = registry.new_key()
        ws = await hello(url, api_key)
        await publish_events(
            kafka_settings, topics.API_KEYS, (key_id, ApiKeyRevoked(key_id=key_id, tenant_id=tenant_id))
        )
        code, _ = await close_code(ws)
        assert code == 4401
        await eventually(lambda: len(app.state.registry_keys) == 0, timeout=5)  # its confirmation dropped
        # the (stale) registry still confirms it: realtime knows better and refuses
        assert (await refused(url, api_key))[0] == 401


async def test_a_key_works_on_the_websocket_as_soon_as_the_api_returned_it(
    kafka_settings: KafkaSettings, make_database: Callable[[], Awaitable[str]]
) -> None:
    """Against the real registry: no retry between the API's answer and the upgrade."""
    async with Registry.running(kafka_settings, make_database) as registry:
        tenant = await registry.tenant()
        owner = await registry.client.get(LOOKUP, headers=tenant["auth"])
        assert owner.json() == {"keyId": owner.json()["keyId"], "tenantId": tenant["tenantId"]}, owner.text
        async with _realtime(kafka_settings, registry.url) as (_, url):
            tenant = await registry.tenant()
            ws = await hello(url, tenant["apiKey"])
            key = (
                await registry.client.post("/v1/api-keys", json={"name": "ws"}, headers=tenant["auth"])
            ).json()
            other = await hello(f"{url}?token={key['apiKey']}")
            await ws.close()
            await other.close()
