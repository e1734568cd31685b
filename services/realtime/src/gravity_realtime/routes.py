"""Health routes."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

__all__ = ["router"]

router = APIRouter()


def _json(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


@router.get("/healthz")
async def healthz() -> Response:
    """The process is up."""
    return _json({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    """API keys replayed and the live stream positioned."""
    state = request.app.state
    checks = {
        "apiKeys": "ok" if state.key_reader is not None and state.key_reader.ready.is_set() else "replaying",
        "stream": "ok" if state.live is not None and state.live.assigned.is_set() else "starting",
    }
    if all(v == "ok" for v in checks.values()):
        return _json({"status": "ok", "connections": len(state.hub)})
    return _json({"status": "unavailable", "checks": checks}, 503)
