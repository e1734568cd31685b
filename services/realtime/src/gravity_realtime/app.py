"""The realtime app: the lifespan owns the key reader, the live stream and the registry client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI

from gravity_events import topics
from gravity_events.kafka import ChangeStreamReader, ensure_topics
from gravity_realtime import routes, ws
from gravity_realtime.consumer import LiveStream
from gravity_realtime.handlers import KeyTable, LiveRouter
from gravity_realtime.hub import Hub
from gravity_realtime.settings import Settings

__all__ = ["create_app"]


def create_app(settings: Settings) -> FastAPI:
    """Build the realtime app for ``settings``."""
    hub = Hub()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await ensure_topics(settings)
        keys = KeyTable(hub)
        key_reader = ChangeStreamReader(
            settings, topics=[topics.API_KEYS], apply=keys.apply, client_id="gravity-realtime"
        )
        live = LiveStream(settings, LiveRouter(hub))
        async with httpx.AsyncClient(base_url=settings.registry_url, timeout=10) as http:
            await key_reader.start()
            await live.start()
            app.state.keys, app.state.http = keys, http
            app.state.key_reader, app.state.live = key_reader, live
            tasks = [asyncio.create_task(key_reader.run()), asyncio.create_task(live.run())]
            try:
                yield
            finally:
                hub.close_all()  # 1012: clients reconnect elsewhere and resume with since
                key_reader.stop()
                live.stop()
                await asyncio.gather(*tasks, return_exceptions=True)
                await key_reader.close()
                await live.close()

    app = FastAPI(title="Gravity realtime", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings, app.state.hub = settings, hub
    app.state.key_reader = app.state.live = None
    app.include_router(routes.router)
    app.include_router(ws.router)
    return app
