"""The registry app: the lifespan owns the pool, the producer, the outbox publisher, the projection, the
delivery log and the RingCentral keeper.

Where each part lives: :mod:`~gravity_registry.api` (HTTP routes and their documented shapes, one module
per domain), :mod:`~gravity_registry.handlers` (what the registry does), :mod:`~gravity_registry.db` (every
SQL statement), :mod:`~gravity_registry.consumer` (the two consumers), :mod:`~gravity_registry.ringcentral`
(the RingCentral client). The background loops run under a :class:`~gravity_service.tasks.Supervisor`: one
that dies turns ``/readyz`` 503, and under ``serve()`` ends the process with a non-zero status.

Before the app is ready the lifespan republishes a change stream the broker lost
(:mod:`~gravity_registry.handlers.republish`). Every request body is capped before it is parsed
(:class:`~gravity_registry.limits.BodyLimit`); test webhooks and re-sends are rate-limited per tenant.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import asyncpg
from fastapi import FastAPI

from gravity_events.kafka import ensure_topics, make_producer
from gravity_registry import db
from gravity_registry.api import router
from gravity_registry.consumer import make_delivery_log, make_projection
from gravity_registry.errors import install_error_handlers
from gravity_registry.handlers import ConnectionKeeper, Connections, OutboxPublisher, drain_outbox, republish
from gravity_registry.limits import BodyLimit, TokenBuckets
from gravity_registry.ringcentral import RingCentralClient
from gravity_registry.settings import Settings
from gravity_service.health import OK, Check, health_router
from gravity_service.metrics import RegistryMetrics, install_metrics
from gravity_service.tasks import Supervisor
from gravity_webhooks import DeliveryClient, SecretBox

__all__ = ["create_app"]

log = logging.getLogger(__name__)

USER_AGENT = "Gravity-SMS-Webhooks/0.1.0"


def create_app(settings: Settings) -> FastAPI:
    """Build the registry app for ``settings``."""
    supervisor = Supervisor()
    metrics = RegistryMetrics(tenant_labels=settings.metrics_tenant_labels)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(settings.database_url.get_secret_value(), min_size=1, max_size=10)
        try:
            async with pool.acquire() as conn:
                applied = await db.apply_migrations(conn)
            if applied:
                log.info("applied migrations %s", applied)
            await ensure_topics(settings, create=not settings.production)
            producer = make_producer(settings, client_id="gravity-registry", linger_ms=settings.linger_ms)
            await producer.start()
            outbox = OutboxPublisher(
                pool, producer, sweep_seconds=settings.outbox_sweep_seconds, metrics=metrics
            )
            if settings.republish_check:
                await _republish_if_lost(settings, pool, outbox)
            projection = make_projection(settings, pool, producer, metrics)
            delivery_log = make_delivery_log(settings, pool, producer, outbox)
            await asyncio.gather(projection.start(), delivery_log.start())  # group joins overlap
            metrics.consumer_lag.track(projection)
            metrics.consumer_lag.track(delivery_log)
            rc_client = RingCentralClient.from_settings(settings)
            delivery_client = DeliveryClient(
                production=settings.production, user_agent=USER_AGENT, max_connections=50
            )
            keeper = ConnectionKeeper(settings, pool, producer, outbox, box, rc_client, metrics)
            app.state.pool, app.state.outbox, app.state.projection = pool, outbox, projection
            app.state.connections = Connections(settings, pool, outbox, box, rc_client)
            app.state.keeper, app.state.delivery_client = keeper, delivery_client
            app.state.delivery_log = delivery_log
            supervisor.start("outbox", outbox.run(), stop=outbox.stop)
            supervisor.start("projection", projection.run(), stop=projection.stop)
            supervisor.start("keeper", keeper.run(), stop=keeper.stop)
            supervisor.start("delivery-log", delivery_log.run(), stop=delivery_log.stop)
            try:
                yield
            finally:
                await supervisor.stop()
                await projection.close()
                await delivery_log.close()
                await producer.stop()
                await rc_client.aclose()
                await delivery_client.aclose()
        finally:
            await pool.close()

    app = FastAPI(
        title="Gravity SMS registry",
        version="0.1.0",
        description="Tenants, API keys, apps, RingCentral connections and the messages read model.",
        lifespan=lifespan,
    )
    app.state.settings, app.state.metrics = settings, metrics
    app.state.pool = app.state.projection = app.state.delivery_log = None
    secret_key = settings.secret_key.get_secret_value() if settings.secret_key else ""
    box = SecretBox(secret_key)
    app.state.secret_box = box
    app.state.test_webhook_limit = TokenBuckets(
        what="test-webhook", per_minute=settings.test_webhook_per_minute, burst=settings.test_webhook_burst
    )
    app.state.resend_limit = TokenBuckets(
        what="re-send", per_minute=settings.resend_per_minute, burst=settings.resend_burst
    )
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(health_router(_readiness_checks(app), supervisor=supervisor))
    install_metrics(app, metrics)
    return app


async def _republish_if_lost(settings: Settings, pool: asyncpg.Pool, outbox: OutboxPublisher) -> None:
    """Before ready: republish a change stream that lacks entities of the database, and publish it now
    rather than at the outbox's first sweep (another copy holding the outbox lock publishes it instead)."""
    states = await republish(pool, settings, mode="check")
    if states and any(s.republished for s in states):
        published = await drain_outbox(pool, outbox, timeout=30)
        log.info(
            "republished the change streams from the database%s: %s",
            "" if published else " (publishing continues in the background)",
            ", ".join(f"{s.topic} {s.republished}" for s in states),
        )


def _readiness_checks(app: FastAPI) -> dict[str, Check]:
    """Database reachable; projection and delivery log caught up with what was on their topics at start."""
    state = app.state

    async def database() -> str:
        if state.pool is None:
            return "starting"
        try:
            async with state.pool.acquire(timeout=2) as conn:
                await db.ping(conn)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return "unreachable"
        return OK

    def caught_up(consumer_name: str) -> Callable[[], str]:
        def check() -> str:
            consumer = getattr(state, consumer_name)
            return OK if consumer is not None and consumer.caught_up.is_set() else "catching up"

        return check

    return {
        "database": database,
        "projection": caught_up("projection"),
        "deliveries": caught_up("delivery_log"),
    }
