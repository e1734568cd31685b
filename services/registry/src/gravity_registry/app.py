"""The registry app: the lifespan owns the pool, the producer, the outbox publisher and the projection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg
from fastapi import FastAPI

from gravity_events.kafka import ensure_topics, make_producer
from gravity_registry import db
from gravity_registry.connections import ConnectionKeeper
from gravity_registry.consumer import make_delivery_log, make_projection
from gravity_registry.errors import install_error_handlers
from gravity_registry.handlers import OutboxPublisher
from gravity_registry.ringcentral import RingCentralClient
from gravity_registry.routes import router
from gravity_registry.settings import Settings
from gravity_webhooks import DeliveryClient, SecretBox

__all__ = ["create_app"]

log = logging.getLogger(__name__)

USER_AGENT = "Gravity-SMS-Webhooks/0.1.0"


def create_app(settings: Settings) -> FastAPI:
    """Build the registry app for ``settings``."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(settings.database_url.get_secret_value(), min_size=1, max_size=10)
        try:
            async with pool.acquire() as conn:
                applied = await db.apply_migrations(conn)
            if applied:
                log.info("applied migrations %s", applied)
            await ensure_topics(settings)
            producer = make_producer(settings, client_id="gravity-registry")
            await producer.start()
            outbox = OutboxPublisher(pool, producer, sweep_seconds=settings.outbox_sweep_seconds)
            projection = make_projection(settings, pool, producer)
            delivery_log = make_delivery_log(settings, pool, producer, outbox)
            await asyncio.gather(projection.start(), delivery_log.start())  # group joins overlap
            rc_client = RingCentralClient(timeout=settings.rc_timeout_seconds)
            delivery_client = DeliveryClient(
                production=settings.production, user_agent=USER_AGENT, max_connections=50
            )
            keeper = ConnectionKeeper(settings, pool, producer, outbox, box, rc_client)
            app.state.pool, app.state.outbox, app.state.projection = pool, outbox, projection
            app.state.keeper, app.state.delivery_client = keeper, delivery_client
            app.state.delivery_log = delivery_log
            tasks = [
                asyncio.create_task(outbox.run(), name="outbox"),
                asyncio.create_task(projection.run(), name="projection"),
                asyncio.create_task(keeper.run(), name="keeper"),
                asyncio.create_task(delivery_log.run(), name="delivery-log"),
            ]
            try:
                yield
            finally:
                keeper.stop()
                delivery_log.stop()
                projection.stop()
                outbox.stop()
                await asyncio.gather(*tasks, return_exceptions=True)
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
    app.state.settings = settings
    secret_key = settings.secret_key.get_secret_value() if settings.secret_key else ""
    box = SecretBox(secret_key)
    app.state.secret_box = box
    install_error_handlers(app)
    app.include_router(router)
    return app
