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
from gravity_registry.consumer import make_projection
from gravity_registry.errors import install_error_handlers
from gravity_registry.handlers import OutboxPublisher
from gravity_registry.routes import router
from gravity_registry.settings import Settings

__all__ = ["create_app"]

log = logging.getLogger(__name__)


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
            await projection.start()
            app.state.pool, app.state.outbox, app.state.projection = pool, outbox, projection
            tasks = [
                asyncio.create_task(outbox.run(), name="outbox"),
                asyncio.create_task(projection.run(), name="projection"),
            ]
            try:
                yield
            finally:
                projection.stop()
                outbox.stop()
                await asyncio.gather(*tasks, return_exceptions=True)
                await projection.close()
                await producer.stop()
        finally:
            await pool.close()

    app = FastAPI(
        title="Gravity SMS registry",
        version="0.1.0",
        description="Tenants, API keys, RingCentral connections and the messages read model.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(router)
    return app
