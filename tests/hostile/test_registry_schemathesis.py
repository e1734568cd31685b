"""schemathesis against the registry's own OpenAPI document: every route, without auth, with a tenant's
key and with the admin token. Whatever it sends, the registry never answers 5xx, every error is in the
contract's shape, and every answer is one the document declares: its status, its content type and a body
that fits the declared schema. The registry runs for real (uvicorn, PostgreSQL, broker) in a thread of its
own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from tests.registry.conftest import ADMIN_TOKEN, registry_settings
from tests.support import serve_in_thread

from gravity_events.settings import KafkaSettings
from gravity_registry.app import create_app
from gravity_registry.settings import Settings

# schemathesis 4.32 draws from `random` inside its strategies; hypothesis deprecates that. Not ours to fix.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies:hypothesis.errors.HypothesisDeprecationWarning"
)

_SCHEMA_ONLY = Settings(DATABASE_URL="postgresql://schema-only/none")
schema = schemathesis.openapi.from_dict(create_app(_SCHEMA_ONLY).openapi())


@pytest.fixture(scope="module")
def registry_url(kafka_settings: KafkaSettings, database_url: str) -> Iterator[str]:
    config = registry_settings(kafka_settings, database_url, GRAVITY_RC_TIMEOUT_SECONDS=1)
    with serve_in_thread(create_app(config)) as port:
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=10) as client:
            for _ in range(300):
                if client.get("/readyz").status_code == 200:
                    break
                import time

                time.sleep(0.1)  # readiness poll with a bound (no event loop in this thread)
            else:
                raise RuntimeError("registry not ready")
        yield url


@pytest.fixture(scope="module")
def credentials(registry_url: str) -> dict[str, dict[str, str]]:
    with httpx.Client(base_url=registry_url, timeout=10) as client:
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        tenant = client.post("/v1/tenants", json={"name": "fuzz"}, headers=admin).json()
        tenant_auth = {"Authorization": f"Bearer {tenant['apiKey']}"}
        client.post("/v1/apps", json={"name": "fuzz-app"}, headers=tenant_auth)
    return {"tenant": tenant_auth, "admin": admin}


_CONFORMANCE = [response_schema_conformance, status_code_conformance, content_type_conformance]


def _check(response: Any) -> None:
    if response.status_code >= 500:
        # the one 5xx of the contract: RingCentral itself refused or could not be reached
        assert response.status_code == 502, (response.status_code, response.text[:500])
        assert response.json()["error"]["code"] == "ringcentral_error"
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"}, body
        assert isinstance(body["error"]["code"], str) and body["error"]["code"].islower()
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_5xx_and_errors_in_contract_shape(
    case: Any, registry_url: str, credentials: dict[str, dict[str, str]]
) -> None:
    response = case.call(base_url=registry_url, timeout=15)  # generated (mostly invalid) Authorization
    _check(response)
    case.validate_response(response, checks=_CONFORMANCE)
    for auth in credentials.values():
        response = case.call(base_url=registry_url, headers=auth, timeout=15)
        _check(response)
        case.validate_response(response, checks=_CONFORMANCE)
