"""Registry fixtures: an app on a fresh database with a unique consumer group, and tenant factories."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from tests.support import wait_ready

from gravity_events.settings import KafkaSettings
from gravity_registry.app import create_app
from gravity_registry.settings import Settings

ADMIN_TOKEN = "test-admin-token-" + "x" * 16


def registry_settings(kafka: KafkaSettings, database_url: str, **overrides: Any) -> Settings:
    """Settings for a registry on the session broker and ``database_url``."""
    values: dict[str, Any] = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.kafka_bootstrap_servers,
        "KAFKA_ENABLE_IDEMPOTENCE": kafka.kafka_enable_idempotence,
        "KAFKA_SESSION_TIMEOUT_MS": kafka.kafka_session_timeout_ms,
        "DATABASE_URL": database_url,
        "GRAVITY_ADMIN_TOKEN": ADMIN_TOKEN,
        "GRAVITY_REGISTRY_CONSUMER_GROUP": "registry-test-" + secrets.token_hex(4),
        "GRAVITY_REGISTRY_OUTBOX_SWEEP_SECONDS": 0.2,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Registry:
    """A running registry app and a client for it."""

    client: httpx.AsyncClient
    settings: Settings
    app: Any

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    async def tenant(self, name: str = "Acme") -> dict[str, Any]:
        r = await self.client.post("/v1/tenants", json={"name": name}, headers=self.admin)
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        body["auth"] = {"Authorization": f"Bearer {body['apiKey']}"}
        return body


@pytest.fixture(scope="module")
async def registry(
    kafka_settings: KafkaSettings, make_database: Callable[[], Awaitable[str]]
) -> AsyncIterator[Registry]:
    """One registry per test module on its own database."""
    settings = registry_settings(kafka_settings, await make_database())
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://registry") as client:
            await wait_ready(client=client, timeout=30)
            yield Registry(client, settings, app)
