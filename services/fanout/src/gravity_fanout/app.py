"""The fanout process: health and readiness today; webhook delivery arrives with its own issue."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
from fastapi import FastAPI
from fastapi.responses import Response

from gravity_events.kafka import ensure_topics
from gravity_fanout.settings import Settings

__all__ = ["create_app"]


def create_app(settings: Settings) -> FastAPI:
    """Build the app; the lifespan makes sure the topics it will consume exist."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await ensure_topics(settings)
        app.state.ready = True
        yield
        app.state.ready = False

    app = FastAPI(title="Gravity fanout", lifespan=lifespan)
    app.state.ready = False

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        body: dict[str, object] = {"status": "ok"}
        if not app.state.ready:
            body = {"status": "unavailable", "checks": {"broker": "starting"}}
        status = 200 if app.state.ready else 503
        return Response(orjson.dumps(body), status_code=status, media_type="application/json")

    return app
