"""The shared metrics anatomy without a broker: route templates as labels, one registry per app, the
optional tenant labels, and trace context passed through the HTTP middleware."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
from fastapi import FastAPI, Request
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from gravity_events import tracing
from gravity_service.errors import install_error_handlers
from gravity_service.metrics import (
    UNMATCHED_ROUTE,
    FanoutMetrics,
    RealtimeMetrics,
    RegistryMetrics,
    ServiceMetrics,
    install_metrics,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def _app(metrics: ServiceMetrics) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/v1/apps/{app_id}")
    async def get_app(app_id: str, request: Request) -> dict[str, str | None]:
        return {"appId": app_id, "traceId": tracing.current_trace_id()}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("unexpected")

    install_metrics(app, metrics)
    return app


def _samples(text: str) -> Iterator[Sample]:
    for family in text_string_to_metric_families(text):
        yield from family.samples


def _value(text: str, name: str, **labels: str) -> float:
    found = [
        s.value
        for s in _samples(text)
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    return sum(found)


async def test_requests_are_counted_by_route_template_never_by_raw_path() -> None:
    metrics = ServiceMetrics()
    app = _app(metrics)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app, raise_app_exceptions=False), base_url="http://svc"
    ) as c:
        for n in range(3):
            assert (await c.get(f"/v1/apps/app_{n:016x}")).status_code == 200
        assert (await c.get("/v1/nothing/msg_a1b2c3d4e5f6")).status_code == 404
        assert (await c.request("BREW", "/v1/apps/app_1")).status_code == 405
        assert (await c.get("/boom")).status_code == 500
        r = await c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert (
        _value(text, "gravity_http_requests_total", route="/v1/apps/{app_id}", method="GET", status="200")
        == 3
    )
    assert _value(text, "gravity_http_requests_total", route=UNMATCHED_ROUTE, status="404") == 1
    assert (
        _value(text, "gravity_http_requests_total", route="/v1/apps/{app_id}", method="OTHER", status="405")
        == 1
    )
    assert _value(text, "gravity_http_requests_total", route="/boom", status="500") == 1
    count = _value(text, "gravity_http_request_seconds_count", route="/v1/apps/{app_id}", method="GET")
    assert count == 3
    values = {v for s in _samples(text) for v in s.labels.values()}
    assert not any(v.startswith(("app_", "msg_")) for v in values), values


async def test_each_app_has_its_own_registry() -> None:
    first, second = ServiceMetrics(), ServiceMetrics()
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(_app(first)), base_url="http://a") as a,
        httpx.AsyncClient(transport=httpx.ASGITransport(_app(second)), base_url="http://b") as b,
    ):
        await a.get("/v1/apps/x")
        await a.get("/v1/apps/y")
        await b.get("/v1/apps/z")
        text_a, text_b = (await a.get("/metrics")).text, (await b.get("/metrics")).text
    assert _value(text_a, "gravity_http_requests_total", route="/v1/apps/{app_id}") == 2
    assert _value(text_b, "gravity_http_requests_total", route="/v1/apps/{app_id}") == 1


async def test_an_incoming_traceparent_is_current_in_the_handler_without_an_sdk() -> None:
    assert not tracing.recording()  # the test process never installs a provider
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(_app(ServiceMetrics())), base_url="http://a"
    ) as c:
        traced = await c.get("/v1/apps/x", headers={"traceparent": TRACEPARENT})
        plain = await c.get("/v1/apps/x")
        broken = await c.get("/v1/apps/x", headers={"traceparent": "00-not-a-trace-01"})
    assert traced.json()["traceId"] == TRACE_ID
    assert plain.json()["traceId"] is None and broken.json()["traceId"] is None


def test_tenant_labels_are_off_by_default_and_opt_in() -> None:
    off, on = FanoutMetrics(), FanoutMetrics(tenant_labels=True)
    for metrics in (off, on):
        metrics.labels(
            metrics.attempts, outcome="success", tenant_id="tenant_0123456789abcdef", app_id="app_1"
        ).inc()
        metrics.labels(
            metrics.delivery_lag_seconds, tenant_id="tenant_0123456789abcdef", app_id="app_1"
        ).observe(0.2)
        metrics.retries_scheduled.inc()
    text_off, text_on = off.render().decode(), on.render().decode()
    assert "tenant_0123456789abcdef" not in text_off and "app_1" not in text_off
    assert _value(text_off, "gravity_fanout_attempts_total", outcome="success") == 1
    assert (
        _value(
            text_on,
            "gravity_fanout_attempts_total",
            outcome="success",
            tenant="tenant_0123456789abcdef",
            app="app_1",
        )
        == 1
    )
    assert _value(text_on, "gravity_fanout_delivery_lag_seconds_count", app="app_1") == 1


def test_every_service_metric_is_exposed_before_it_first_moves() -> None:
    """The dashboards' series exist (at 0) from the start, so a rate() has a baseline."""
    names = {
        family.name
        for metrics in (RegistryMetrics(), FanoutMetrics(), RealtimeMetrics())
        for family in text_string_to_metric_families(metrics.render().decode())
    }
    assert {
        "gravity_registry_keeper_checks",
        "gravity_registry_connections",
        "gravity_registry_outbox_depth",
        "gravity_fanout_attempts",
        "gravity_fanout_in_flight",
        "gravity_realtime_connections",
        "gravity_realtime_clients_closed",
        "gravity_kafka_consumer_lag",
    } <= names
