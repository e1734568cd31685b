"""``GET /v1/ws``: authenticate, optionally resume from ``since``, then stream live frames.

Order of a resume, chosen so there is no gap and no duplicate at the seam: the client is registered
for live frames *before* history is read (a message published meanwhile is either in the history —
its row was committed before it was published — or queued live, or both, and the writer drops the
second copy by messageId); history is sent oldest first; then the queue drains. The live stream is in
the gateway's order (the registry publishes each tenant so), so live frames at or before ``since`` —
from a copy that is behind the one the client left — are what the client had, and are dropped too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import quote

import httpx
from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from gravity_events.codec import encode
from gravity_events.ids import parse_timestamp
from gravity_events.models import SmsInbound
from gravity_realtime.hub import Client, Position, Resume
from gravity_service.errors import error_body, json_response

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter()

CLOSE_UNAUTHORIZED = 4401
CLOSE_NOT_FOUND = 4404


class _UnknownSince(Exception):
    """The ``since`` messageId is not one of the tenant's messages."""


def _frame(message: dict[str, Any]) -> bytes:
    """The ``sms_inbound`` bytes of a message object, identical to the topic record."""
    return encode(
        SmsInbound(
            message_id=message["messageId"],
            from_=message["from"],
            to=message["to"],
            body=message["body"],
            rc_message_id=message["rcMessageId"],
            tenant_id=message["tenantId"],
            timestamp=parse_timestamp(message["timestamp"]),
        )
    )


async def _history(
    http: httpx.AsyncClient, api_key: str, since: str
) -> tuple[Position, list[dict[str, Any]]]:
    """The position of ``since`` and every message after it, oldest first, from the registry's read model."""
    auth = {"Authorization": f"Bearer {api_key}"}
    r = await http.get(f"/v1/sms/messages/{quote(since, safe='')}", headers=auth)
    if r.status_code == 404:
        raise _UnknownSince(since)
    r.raise_for_status()
    position = _position(r.json())
    messages: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"after": since, "limit": "100", **({"cursor": cursor} if cursor else {})}
        r = await http.get("/v1/sms/messages", params=params, headers=auth)
        if r.status_code == 404:
            raise _UnknownSince(since)
        r.raise_for_status()
        page = r.json()
        messages += page["messages"]
        cursor = page["nextCursor"]
        if cursor is None:
            return position, messages


def _position(message: dict[str, Any]) -> Position:
    return (message["receivedAt"], message["messageId"])


async def _refuse(ws: WebSocket, status: int, close_code: int, message: str) -> None:
    """HTTP ``status`` before the upgrade where the server supports it, else close ``close_code``."""
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        code = "unauthorized" if status == 401 else "not_found"
        await ws.send_denial_response(json_response(error_body(code, message), status))
    else:
        await ws.accept()
        await ws.close(close_code)


def _bearer(ws: WebSocket) -> str | None:
    scheme, _, token = ws.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return ws.query_params.get("token")


@router.websocket("/v1/ws")
async def stream(ws: WebSocket) -> None:
    """One tenant's live ``sms_inbound`` stream."""
    state = ws.app.state
    api_key = _bearer(ws)
    found = state.keys.lookup(api_key)
    if found is None or api_key is None:
        await _refuse(ws, 401, CLOSE_UNAUTHORIZED, "a valid API key is required")
        return
    key_id, tenant_id = found
    client = Client(
        ws,
        tenant_id=tenant_id,
        key_id=key_id,
        max_queued=state.settings.max_queued_frames,
        abort_after=state.settings.close_grace_seconds,
    )
    since = ws.query_params.get("since")
    state.hub.add(client)
    try:
        history: list[dict[str, Any]] = []
        if since:
            try:
                position, history = await _history(state.http, api_key, since)
            except _UnknownSince:
                await _refuse(ws, 404, CLOSE_NOT_FOUND, "since is not a message of this tenant")
                return
            client.resume = Resume(position)
        await ws.accept()
        await ws.send_text(f'{{"type":"connected","tenantId":"{tenant_id}"}}')
        for message in history:
            client.resume.sent(message["messageId"], _position(message))  # type: ignore[union-attr]
            await ws.send_text(_frame(message).decode())
        writer = asyncio.create_task(client.write_loop())
        reader = asyncio.create_task(_drain_incoming(ws))
        await asyncio.wait({writer, reader}, return_when=asyncio.FIRST_COMPLETED)
        if not writer.done():
            client.close(1000)
            await writer
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    except (WebSocketDisconnect, httpx.HTTPError, OSError) as exc:
        log.info("websocket of %s ended: %r", tenant_id, exc)
    finally:
        state.hub.remove(client)


async def _drain_incoming(ws: WebSocket) -> None:
    """Read (and ignore) what the client sends, to notice when it goes away."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
