"""Prometheus metrics: one registry per app, the HTTP instruments every service has, and each service's own.

A service builds its metrics object once in ``create_app`` and installs it::

    metrics = FanoutMetrics(tenant_labels=settings.metrics_tenant_labels)
    install_metrics(app, metrics)              # GET /metrics + the HTTP middleware
    metrics.consumer_lag.track(consumer)       # each EventConsumer / ChangeStreamReader it starts
    metrics.labels(metrics.attempts, outcome="success", tenant_id=t, app_id=a).inc()

Each object owns a :class:`prometheus_client.CollectorRegistry` of its own, never the global one, so a
test process can build many apps side by side and each ``/metrics`` shows only its app's series.

Label values come from fixed vocabularies (route templates, outcomes, statuses): never a message id, key,
token or secret. The ``tenant`` and ``app`` labels exist only when ``GRAVITY_METRICS_TENANT_LABELS=true``
(:attr:`ServiceMetrics.tenant_labels`); :meth:`ServiceMetrics.labels` drops the ids otherwise, so the
calling code is the same either way. The names and labels are part of the contract (docs/operations.md).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Sequence
from typing import Any, ClassVar, TypeVar

import prometheus_client
from fastapi import APIRouter, FastAPI
from fastapi.responses import Response
from opentelemetry import context as otel_context
from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gravity_events import tracing
from gravity_events.kafka import ConsumerLag

__all__ = [
    "FAST_BUCKETS",
    "LATENCY_BUCKETS",
    "UNMATCHED_ROUTE",
    "FanoutMetrics",
    "HTTPMetricsMiddleware",
    "IngestMetrics",
    "RealtimeMetrics",
    "RegistryMetrics",
    "ServiceMetrics",
    "install_metrics",
    "metrics_router",
]

# Counters and histograms without a ``_created`` series each: half the exposition, nothing a dashboard uses.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

UNMATCHED_ROUTE = "unmatched"
"""The ``route`` label of a request no route matched (a 404): raw paths never become label values."""

FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds, for work that takes milliseconds (HTTP handlers, broker appends, one webhook attempt)."""

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
"""Seconds, for end-to-end latencies that include queues and retries (projection, delivery lag)."""

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

M = TypeVar("M", Counter, Gauge, Histogram)


class ServiceMetrics:
    """The registry of one app: HTTP requests, consumer lag, and what a subclass adds.

    ``tenant_labels`` (``GRAVITY_METRICS_TENANT_LABELS``) adds ``tenant`` / ``app`` labels to the metrics a
    subclass declares with :meth:`_tenant_scoped`.
    """

    def __init__(self, *, tenant_labels: bool = False) -> None:
        self.tenant_labels = tenant_labels
        self.registry = CollectorRegistry(auto_describe=True)
        self._scoped: dict[int, tuple[bool, bool]] = {}
        self.http_requests = Counter(
            "gravity_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.http_request_seconds = Histogram(
            "gravity_http_request_seconds",
            "Time from a request's arrival to the end of its response, by route template and method.",
            ["route", "method"],
            buckets=FAST_BUCKETS,
            registry=self.registry,
        )
        self.consumer_lag = ConsumerLag()
        """``gravity_kafka_consumer_lag``: ``track()`` every consumer and change-stream reader."""
        self.registry.register(self.consumer_lag)

    def _tenant_scoped(
        self, kind: type[M], name: str, doc: str, labels: Sequence[str] = (), *, app: bool = False, **kw: Any
    ) -> M:
        """A metric that gains ``tenant`` (and, with ``app``, ``app``) labels when tenant labels are on."""
        names = [*labels]
        if self.tenant_labels:
            names.append("tenant")
            if app:
                names.append("app")
        metric = kind(name, doc, names, registry=self.registry, **kw)
        self._scoped[id(metric)] = (self.tenant_labels, self.tenant_labels and app)
        return metric

    def labels(
        self, metric: M, /, *, tenant_id: str | None = None, app_id: str | None = None, **labels: str
    ) -> M:
        """``metric`` with ``labels``, plus the tenant/app ids when the metric has those labels (tenant
        labels on); the ids are dropped otherwise. A metric without any labels is returned as it is."""
        tenant, app = self._scoped.get(id(metric), (False, False))
        if tenant:
            labels["tenant"] = tenant_id or "none"
        if app:
            labels["app"] = app_id or "none"
        return metric.labels(**labels) if labels else metric

    def _counter(
        self, name: str, doc: str, labels: Sequence[str] = (), values: Iterable[str] = ()
    ) -> Counter:
        counter = Counter(name, doc, list(labels), registry=self.registry)
        for value in values:  # every known outcome shows as 0 before it first happens
            counter.labels(value)
        return counter

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


class IngestMetrics(ServiceMetrics):
    """Ingest: one count per notification by outcome, and the broker append's time."""

    OUTCOMES: ClassVar[tuple[str, ...]] = (
        "accepted",
        "handshake",
        "unauthorized",
        "invalid",
        "too_large",
        "not_sms",
        "broker_unavailable",
        "not_ready",
        "error",
    )

    def __init__(self, *, tenant_labels: bool = False) -> None:
        super().__init__(tenant_labels=tenant_labels)
        self.notifications = self._counter(
            "gravity_ingest_notifications",
            "Webhook requests by what became of them (accepted = appended to the raw topic).",
            ["outcome"],
            self.OUTCOMES,
        )
        self.by_outcome: dict[str, Counter] = {o: self.notifications.labels(o) for o in self.OUTCOMES}
        """The counter of each outcome, resolved once: ``by_outcome["accepted"].inc()`` on the hot path."""
        self.append_seconds = Histogram(
            "gravity_ingest_append_seconds",
            "Time to append one notification to the raw topic and get the broker's acknowledgement.",
            buckets=FAST_BUCKETS,
            registry=self.registry,
        )


class RegistryMetrics(ServiceMetrics):
    """Registry: the projection, the outbox, the subscription keeper and the connections it keeps."""

    KEEPER_OUTCOMES: ClassVar[tuple[str, ...]] = ("ok", "renewed", "recreated", "token_refreshed", "error")
    CONNECTION_STATUSES: ClassVar[tuple[str, ...]] = ("active", "renewing", "blacklisted", "expired", "error")

    def __init__(self, *, tenant_labels: bool = False) -> None:
        super().__init__(tenant_labels=tenant_labels)
        self.messages_stored = self._tenant_scoped(
            Counter, "gravity_registry_messages_stored", "Inbound messages stored for the first time."
        )
        self.projection_seconds = Histogram(
            "gravity_registry_projection_seconds",
            "From the raw record's append to the broker's acknowledgement of its sms_inbound event.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.outbox_depth = Gauge(
            "gravity_registry_outbox_depth", "Outbox rows not yet published.", registry=self.registry
        )
        self.keeper_checks = self._counter(
            "gravity_registry_keeper_checks",
            "Subscription keeper checks of one connection, by what they did.",
            ["outcome"],
            self.KEEPER_OUTCOMES,
        )
        self.connections = Gauge(
            "gravity_registry_connections",
            "RingCentral connections by status.",
            ["status"],
            registry=self.registry,
        )
        for status in self.CONNECTION_STATUSES:
            self.connections.labels(status)


class FanoutMetrics(ServiceMetrics):
    """Fanout: webhook attempts, how late deliveries are, what is in flight and waiting to be retried."""

    OUTCOMES: ClassVar[tuple[str, ...]] = (
        "success",
        "http_error",
        "timeout",
        "connect_error",
        "refused",
        "error",
    )

    def __init__(self, *, tenant_labels: bool = False) -> None:
        super().__init__(tenant_labels=tenant_labels)
        self.attempts = self._tenant_scoped(
            Counter,
            "gravity_fanout_attempts",
            "Webhook delivery attempts by outcome (refused = the URL's address is not allowed).",
            ["outcome"],
            app=True,
        )
        if not self.tenant_labels:
            for outcome in self.OUTCOMES:
                self.attempts.labels(outcome)
        self.attempt_seconds = Histogram(
            "gravity_fanout_attempt_seconds",
            "Duration of one webhook attempt, request sent to response read or failure.",
            buckets=FAST_BUCKETS,
            registry=self.registry,
        )
        self.delivery_lag_seconds = self._tenant_scoped(
            Histogram,
            "gravity_fanout_delivery_lag_seconds",
            "From the message's receivedAt to the 2xx of its delivery to one app (retries included).",
            app=True,
            buckets=LATENCY_BUCKETS,
        )
        self.in_flight = Gauge(
            "gravity_fanout_in_flight", "Webhook attempts under way.", registry=self.registry
        )
        self.retries_scheduled = Counter(
            "gravity_fanout_retries_scheduled",
            "Failed deliveries scheduled for a retry.",
            registry=self.registry,
        )
        self.retries_due = Gauge(
            "gravity_fanout_retries_due",
            "Retries whose time has come and that have not been attempted yet.",
            registry=self.registry,
        )
        self.apps_disabled = self._tenant_scoped(
            Counter,
            "gravity_fanout_apps_disabled",
            "Apps disabled after failing continuously.",
            app=True,
        )


class RealtimeMetrics(ServiceMetrics):
    """Realtime: open WebSockets, frames sent, and why clients were closed."""

    CLOSE_REASONS: ClassVar[tuple[str, ...]] = (
        "client",
        "revoked",
        "slow",
        "shutdown",
        "policy",
        "error",
    )

    def __init__(self, *, tenant_labels: bool = False) -> None:
        super().__init__(tenant_labels=tenant_labels)
        self.connections = Gauge(
            "gravity_realtime_connections", "Open WebSocket connections.", registry=self.registry
        )
        self.frames_sent = self._tenant_scoped(
            Counter, "gravity_realtime_frames_sent", "sms_inbound frames sent to WebSocket clients."
        )
        self.clients_closed = self._counter(
            "gravity_realtime_clients_closed",
            "WebSocket connections that ended, by reason.",
            ["reason"],
            self.CLOSE_REASONS,
        )


def metrics_router(metrics: ServiceMetrics) -> APIRouter:
    """``GET /metrics``: ``metrics``' registry in the Prometheus text format (left out of OpenAPI)."""
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        """The app's metrics, for Prometheus to scrape."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_PLAIN_0_0_4)

    return router


class HTTPMetricsMiddleware:
    """Pure ASGI middleware: counts and times each HTTP request by route template, and starts its trace.

    The ``route`` label is the template of the route that handled the request (``/v1/apps/{appId}``, read
    from ``scope["route"]`` after routing), one of ``paths`` (exact paths an app answers outside its router,
    such as ingest's webhook), or :data:`UNMATCHED_ROUTE`. Methods outside the standard set count as
    ``OTHER``. WebSocket and lifespan scopes pass through untouched.

    Trace context from the first byte: when spans are recorded (see :mod:`gravity_events.tracing`), each
    request runs in a server span named ``<METHOD> <route>``, the child of the request's ``traceparent``;
    in pass-through mode an incoming ``traceparent`` is only made current for the request, so what the
    handler appends or sends carries it on.
    """

    def __init__(self, app: ASGIApp, *, metrics: ServiceMetrics, paths: Collection[str] = ()) -> None:
        self.app = app
        self._paths = frozenset(paths)
        self._requests = metrics.http_requests
        self._seconds = metrics.http_request_seconds
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the request counts as if the app raises before answering
        parent = None
        for name, value in scope["headers"]:
            if name == b"traceparent":
                parent = tracing.context_from_headers([("traceparent", value), *_tracestate(scope)])
                break

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        span = None
        token = None
        if tracing.recording():
            span = tracing.tracer().start_span(scope["method"], context=parent, kind=trace.SpanKind.SERVER)
            token = otel_context.attach(trace.set_span_in_context(span, parent))
        elif parent is not None:
            token = otel_context.attach(parent)
        try:
            await self.app(scope, receive, send_status)
        finally:
            route = self._route(scope)
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            self._observe(route, method, status, time.perf_counter() - start)
            if token is not None:
                otel_context.detach(token)
            if span is not None:
                span.update_name(f"{method} {route}")
                span.set_attribute("http.request.method", method)
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(trace.StatusCode.ERROR)
                span.end()

    def _route(self, scope: Scope) -> str:
        route = scope.get("route")
        template = getattr(route, "path", None)
        if isinstance(template, str):
            return template
        path: str = scope["path"]
        return path if path in self._paths else UNMATCHED_ROUTE

    def _observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:  # a bounded set: route templates, methods and statuses
            children = (
                self._requests.labels(route, method, str(status)),
                self._seconds.labels(route, method),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


def _tracestate(scope: Scope) -> list[tuple[str, bytes]]:
    return [("tracestate", value) for name, value in scope["headers"] if name == b"tracestate"][:1]


def install_metrics(app: FastAPI, metrics: ServiceMetrics, *, paths: Collection[str] = ()) -> None:
    """Serve ``GET /metrics`` from ``metrics`` and count every HTTP request of ``app``.

    For a FastAPI app that handles every path itself. An app that answers some paths before FastAPI sees
    them (ingest) wraps its own ASGI callable in :class:`HTTPMetricsMiddleware` and includes
    :func:`metrics_router` instead.
    """
    app.include_router(metrics_router(metrics))
    app.add_middleware(HTTPMetricsMiddleware, metrics=metrics, paths=paths)
