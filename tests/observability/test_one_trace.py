"""One SMS is one trace across the real processes: RingCentral's notification enters ingest, the registry
stores and publishes it, fanout posts it to the tenant's app, and every one of them exports its spans of
that trace to an OTLP receiver, the webhook POST carrying the trace on in ``traceparent``; and each logs
its part as JSON lines naming the ids and the trace."""

from __future__ import annotations

import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from tests.simulators.ringcentral import running_ringcentral
from tests.support import Received, eventually, free_port, running_receiver, serve
from tests.support.otlp import OtlpReceiver
from tests.support.processes import Service, started

from gravity_events.settings import KafkaSettings

# three service processes start within the test (each up to a minute on a loaded machine)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ADMIN = {"Authorization": "Bearer trace-admin-token-" + "t" * 16}
SERVICES = ("registry", "ingest", "fanout")
SPAN_KIND_CLIENT = 3  # opentelemetry.proto.trace.v1.Span.SpanKind.SPAN_KIND_CLIENT


def _services(infra_env: dict[str, str], otlp_port: int, logs: Path) -> dict[str, Service]:
    ports = {kind: free_port() for kind in SERVICES}
    common = {
        **os.environ,
        **infra_env,
        "KAFKA_ENABLE_IDEMPOTENCE": "false",
        "GRAVITY_ENV": "development",
        "GRAVITY_ADMIN_TOKEN": ADMIN["Authorization"].removeprefix("Bearer "),
        "GRAVITY_SECRET_KEY": secrets.token_urlsafe(32),
        "GRAVITY_PUBLIC_URL": f"http://127.0.0.1:{ports['ingest']}",
        "GRAVITY_REGISTRY_URL": f"http://127.0.0.1:{ports['registry']}",
        "GRAVITY_REGISTRY_CONSUMER_GROUP": "trace-registry-" + secrets.token_hex(4),
        "GRAVITY_FANOUT_CONSUMER_GROUP": "trace-fanout-" + secrets.token_hex(4),
        "GRAVITY_LOG_LEVEL": "info",
        "GRAVITY_LOG_FORMAT": "json",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}",
        # export within a fraction of a second rather than the default five, so the test waits little
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    return {
        kind: Service(
            kind,
            f"gravity_{kind}",
            port,
            {**common, f"GRAVITY_{kind.upper()}_PORT": str(port)},
            logs / f"{kind}.log",
        )
        for kind, port in ports.items()
    }


async def test_one_sms_is_one_trace_through_ingest_registry_and_fanout(
    kafka_settings: KafkaSettings, make_database: Callable[[], Awaitable[str]], tmp_path: Path
) -> None:
    infra_env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.kafka_bootstrap_servers,
        "KAFKA_SESSION_TIMEOUT_MS": str(kafka_settings.kafka_session_timeout_ms),
        "KAFKA_FETCH_MAX_WAIT_MS": str(kafka_settings.kafka_fetch_max_wait_ms),
        "DATABASE_URL": await make_database(),
    }
    otlp = OtlpReceiver()
    async with (
        serve(otlp.app) as otlp_port,
        running_ringcentral() as sim,
        running_receiver() as receiver,
        started(_services(infra_env, otlp_port, tmp_path), first="registry") as services,
        httpx.AsyncClient(base_url=services["registry"].url, timeout=10) as api,
    ):
        tenant = (await api.post("/v1/tenants", json={"name": "traced"}, headers=ADMIN)).json()
        auth = {"Authorization": f"Bearer {tenant['apiKey']}"}
        r = await api.post("/v1/apps", json={"name": "hook", "webhookUrl": receiver.url()}, headers=auth)
        assert r.status_code == 201, r.text
        app_id = r.json()["appId"]
        credentials = {
            "serverUrl": sim.server_url,
            "clientId": sim.client_id,
            "clientSecret": sim.client_secret,
            "jwt": "sim-jwt",
        }
        r = await api.put("/v1/ringcentral/connection", json=credentials, headers=auth)
        assert r.status_code == 200, r.text
        subscription_id = r.json()["subscriptionId"]

        async def posted() -> Received | None:
            """The first webhook POST; until there is one, RingCentral sends a fresh SMS each round, as
            ingest learns the subscription and fanout the app only within seconds of their creation."""
            if hooks := receiver.received("/hook"):
                return hooks[0]
            await sim.deliver(subscription_id, sim.add_message(text="traced"))
            return None

        hook = await eventually(posted, timeout=60, interval=0.5)
        assert "traceparent" in hook.headers, sorted(hook.headers)
        version, trace_id, parent_id, _flags = hook.headers["traceparent"].split("-")
        assert version == "00" and len(trace_id) == 32

        wanted = {"gravity-ingest", "gravity-registry", "gravity-fanout"}
        # spans arrive in batches, each service's on its own schedule: wait for all three, for the
        # webhook client span (it ends only once the POST was answered) and for a root (ingest's server
        # span ends after its children, so it may come in a later batch)
        await eventually(
            lambda: (
                otlp.services_in(trace_id) >= wanted
                and any(s.span_id.hex() == parent_id for _, s in otlp.of_trace(trace_id))
                and any(not s.parent_span_id for _, s in otlp.of_trace(trace_id))
            ),
            timeout=30,
            interval=0.2,
        )

    spans = otlp.of_trace(trace_id)
    by_service = {name: [s for r, s in spans if r.get("service.name") == name] for name in wanted}
    assert all(by_service.values()), {name: len(found) for name, found in by_service.items()}
    # the traceparent on the POST names fanout's HTTP client span of that request
    [(resource, client)] = [(r, s) for r, s in spans if s.span_id.hex() == parent_id]
    assert resource["service.name"] == "gravity-fanout" and client.kind == SPAN_KIND_CLIENT, (
        resource,
        client.name,
        client.kind,
    )
    # ingest started the trace (RingCentral sends none) and everything else descends from it: one root
    roots = [(r["service.name"], s.name) for r, s in spans if not s.parent_span_id]
    assert roots == [("gravity-ingest", "POST /v1/webhooks/ringcentral")], roots

    # the log lines of that message, read once every process has stopped (and flushed): the registry's
    # stored line and fanout's attempt line name the tenant, the message, the app and the trace
    message_id = orjson.loads(hook.body)["messageId"]

    def lines(kind: str) -> list[dict[str, Any]]:
        parsed = []
        for line in (tmp_path / f"{kind}.log").read_text().splitlines():
            if line.startswith("{"):
                parsed.append(orjson.loads(line))
        return parsed

    def of_message(kind: str) -> list[dict[str, Any]]:
        return [e for e in lines(kind) if e.get("messageId") == message_id and e.get("traceId") == trace_id]

    stored = of_message("registry")
    assert stored and all(e["tenantId"] == tenant["tenantId"] for e in stored), lines("registry")[-20:]
    attempts = [e for e in of_message("fanout") if e.get("appId") == app_id]
    assert attempts and all(e["tenantId"] == tenant["tenantId"] for e in attempts), lines("fanout")[-20:]
    accepted = [e for e in lines("ingest") if e.get("traceId") == trace_id]
    assert accepted and all(e["service"] == "gravity-ingest" for e in accepted), lines("ingest")[-20:]
