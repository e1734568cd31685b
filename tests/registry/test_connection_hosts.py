"""Where the registry calls RingCentral: in production only https on ``GRAVITY_RC_ALLOWED_HOSTS``,
dialled through the public-address-only connection logic webhook deliveries use; development anywhere."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from tests.registry.conftest import ADMIN_TOKEN, registry_settings
from tests.registry.test_connection import Gateway, registry_client
from tests.simulators.ringcentral import running_ringcentral
from tests.support import assert_error

from gravity_events.settings import KafkaSettings
from gravity_registry.ringcentral import RingCentralClient, RingCentralError
from gravity_registry.settings import Settings

PRODUCTION = {
    "GRAVITY_ENV": "production",
    "GRAVITY_ADMIN_TOKEN": ADMIN_TOKEN,
    "GRAVITY_SECRET_KEY": "production-test-secret-key-" + "k" * 16,
}


@contextlib.asynccontextmanager
async def tcp_listener() -> AsyncIterator[tuple[int, list[int]]]:
    """A loopback TCP server that counts the connections it accepts (and closes them)."""
    accepted: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], accepted
    finally:
        server.close()
        await server.wait_closed()


def settings_for(**values: Any) -> Settings:
    return Settings(DATABASE_URL="postgresql://unused@127.0.0.1/unused", **values)


def test_allowed_hosts_setting() -> None:
    assert settings_for().rc_allowed_host_set == {
        "platform.ringcentral.com",
        "platform.devtest.ringcentral.com",
    }
    custom = settings_for(GRAVITY_RC_ALLOWED_HOSTS=" Platform.RingCentral.com. , eu.example.com,")
    assert custom.rc_allowed_host_set == {"platform.ringcentral.com", "eu.example.com"}


async def test_production_refuses_server_urls_outside_ringcentral_before_any_connection(
    kafka_settings: KafkaSettings, make_database: Callable[[], Awaitable[str]]
) -> None:
    database_url = await make_database()
    async with registry_client(registry_settings(kafka_settings, database_url)):
        pass  # a development registry creates the topics a production one only verifies
    settings = registry_settings(kafka_settings, database_url, **PRODUCTION)
    async with (
        running_ringcentral() as sim,
        tcp_listener() as (port, accepted),
        registry_client(settings) as client,
    ):
        gateway = Gateway("", client, sim, database_url)
        tenant = await gateway.tenant()
        refused = [
            sim.server_url,  # http on loopback: the simulator itself
            f"https://127.0.0.1:{port}",
            f"https://localhost:{port}",
            "http://platform.ringcentral.com",
            "https://platform.ringcentral.com.evil.example",
            "https://evil.example",
        ]
        for url in refused:
            r = await client.put(
                "/v1/ringcentral/connection", json=gateway.credentials(serverUrl=url), headers=tenant["auth"]
            )
            error = assert_error(r, 422, "validation_error")
            assert [d["field"] for d in error["error"]["details"]] == ["serverUrl"], url
        assert sim.log == [] and accepted == []
        assert_error(await client.get("/v1/ringcentral/connection", headers=tenant["auth"]), 404, "not_found")


async def test_production_client_dials_only_public_addresses() -> None:
    production = settings_for(**PRODUCTION, GRAVITY_RC_ALLOWED_HOSTS="localhost")
    async with tcp_listener() as (port, accepted):
        client = RingCentralClient.from_settings(production)
        try:
            # an allowed name that resolves to loopback: refused at connect time, nothing dialled
            with pytest.raises(RingCentralError) as caught:
                await client.login_with_jwt(f"https://localhost:{port}", "id", "secret", "jwt")
            assert caught.value.status is None and "non-public" in str(caught.value)
            # a host that is not allowed, or plain http: refused before any I/O
            for url in (f"https://127.0.0.1:{port}", f"http://localhost:{port}"):
                with pytest.raises(RingCentralError, match="was not called"):
                    await client.login_with_jwt(url, "id", "secret", "jwt")
        finally:
            await client.aclose()
        assert accepted == []

        # the same call from a development client does reach the address (and fails at TLS)
        development = RingCentralClient.from_settings(settings_for())
        try:
            with pytest.raises(RingCentralError):
                await development.login_with_jwt(f"https://localhost:{port}", "id", "secret", "jwt")
        finally:
            await development.aclose()
        assert accepted
