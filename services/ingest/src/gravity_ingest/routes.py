"""The one public route and the health routes: thin, everything else is in handlers."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gravity_ingest.errors import PayloadTooLarge, json_response
from gravity_ingest.handlers import accept_notification

__all__ = ["router"]

router = APIRouter()

_OK = b'{"status":"ok"}'


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/v1/webhooks/ringcentral", response_model=None)
async def ringcentral_webhook(request: Request) -> Response:
    """RingCentral's webhook: handshake, or a notification to verify and append."""
    validation_token = request.headers.get("validation-token")
    if validation_token is not None:
        return Response(
            status_code=200,
            headers={"Validation-Token": validation_token},
            media_type="application/json",
        )
    state = request.app.state
    raw = await _read_limited(request, state.settings.max_body_bytes)
    await accept_notification(
        raw,
        request.headers.get("verification-token"),
        table=state.subscriptions,
        producer=state.producer,
        publish_timeout=state.settings.publish_timeout_seconds,
    )
    return Response(content=_OK, status_code=200, media_type="application/json")


@router.get("/healthz")
async def healthz() -> Response:
    """The process is up."""
    return Response(content=_OK, media_type="application/json")


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    """Ready once the subscription stream has been replayed and the producer is connected."""
    state = request.app.state
    checks = {
        "subscriptions": "ok" if state.reader is not None and state.reader.ready.is_set() else "replaying",
        "producer": "ok" if state.producer_started else "starting",
    }
    if all(v == "ok" for v in checks.values()):
        return json_response({"status": "ok"})
    return json_response({"status": "unavailable", "checks": checks}, 503)
