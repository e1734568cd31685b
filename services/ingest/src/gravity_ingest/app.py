"""The ingest app: the lifespan owns the producer and the subscription-stream reader; every request is
counted and traced by :class:`~gravity_service.metrics.HTTPMetricsMiddleware` around the whole app."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from gravity_events import topics
from gravity_events.kafka import BatchPartitioner, ChangeStreamReader, ensure_topics, make_producer
from gravity_ingest.handlers import SubscriptionTable
from gravity_ingest.routes import WEBHOOK_PATH, webhook_asgi, webhook_method_not_allowed
from gravity_ingest.settings import Settings
from gravity_service.errors import install_error_handlers
from gravity_service.health import OK, health_router
from gravity_service.metrics import HTTPMetricsMiddleware, IngestMetrics, metrics_router
from gravity_service.tasks import Supervisor

__all__ = ["IngestApp", "create_app"]


class IngestApp:
    """FastAPI for everything, except the webhook POST, which is served by a bare ASGI handler.

    The metrics middleware wraps both, so the webhook is counted under its own path as route label.
    """

    def __init__(self, api: FastAPI, metrics: IngestMetrics) -> None:
        self.api = api
        self.state = api.state
        self.metrics = metrics
        self._asgi = HTTPMetricsMiddleware(self._dispatch, metrics=metrics, paths=[WEBHOOK_PATH])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._asgi(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == WEBHOOK_PATH:
            if scope["method"] == "POST":
                await webhook_asgi(self.api.state, scope, receive, send)
            else:
                await webhook_method_not_allowed(send)
        else:
            await self.api(scope, receive, send)


def create_app(settings: Settings) -> IngestApp:
    """Build the ingest app for ``settings``."""
    supervisor = Supervisor()
    metrics = IngestMetrics(tenant_labels=settings.metrics_tenant_labels)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await ensure_topics(settings, create=not settings.production)
        table = SubscriptionTable()
        reader = ChangeStreamReader(
            settings, topics=[topics.SUBSCRIPTIONS], apply=table.apply, client_id="gravity-ingest"
        )
        table.ready = reader.ready
        metrics.consumer_lag.track(reader)
        producer = make_producer(
            settings,
            client_id="gravity-ingest",
            linger_ms=settings.linger_ms,
            partitioner=BatchPartitioner() if settings.raw_partitioning == "batch" else None,
        )
        await producer.start()
        await reader.start()
        app.state.subscriptions, app.state.producer, app.state.reader = table, producer, reader
        app.state.producer_started = True
        supervisor.start("subscriptions-reader", reader.run(), stop=reader.stop)
        try:
            yield
        finally:
            await supervisor.stop()
            await reader.close()
            await producer.stop()
            app.state.producer_started = False

    app = FastAPI(
        title="Gravity ingest",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.reader = None
    app.state.subscriptions = SubscriptionTable()  # never ready: the webhook answers 503 until startup
    app.state.producer = None
    app.state.producer_started = False
    install_error_handlers(app)
    state = app.state

    def subscriptions() -> str:
        """The subscription stream has been replayed, so tokens can be judged."""
        return OK if state.reader is not None and state.reader.ready.is_set() else "replaying"

    def producer() -> str:
        """The producer is connected."""
        return OK if state.producer_started else "starting"

    checks = {"subscriptions": subscriptions, "producer": producer}
    app.include_router(health_router(checks, supervisor=supervisor))
    app.include_router(metrics_router(metrics))
    return IngestApp(app, metrics)
