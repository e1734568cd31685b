"""``GET /v1/ws``: authenticate, enforce the per-key limit, optionally resume from ``since``, then stream.

Order of a resume, chosen so there is no gap and no duplicate at the seam: the client is registered
for live frames *before* history is read (a message published meanwhile is either in the history —
its row was committed before it was published — or queued live, or both); history is read from the
registry's messages API one page at a time and sent oldest first; then the queue drains. Every frame
sent moves the connection's position in the gateway's order, and a queued live frame at or before it is
one the client has (see :mod:`.hub`), so neither the seam nor a page boundary repeats or skips one.

A resume streams at most ``max_resume_messages`` history messages; when more follow, the socket is
closed with 4413 right after them, before any live frame, so the client's last messageId is still a
point from which the messages API (``after=``) continues without a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import quote

import httpx
from fastapi import APIRouter, WebSocket
from starlette.datastructures import State
from starlette.websockets import WebSocketDisconnect

from gravity_events.codec import encode
from gravity_events.ids import parse_timestamp
from gravity_events.models import SmsInbound
from gravity_realtime.closecodes import (
    CLOSE_NOT_FOUND,
    CLOSE_RESUME_TOO_FAR,
    CLOSE_TOO_BIG,
    CLOSE_TOO_MANY,
    CLOSE_TRY_AGAIN,
    CLOSE_UNAUTHORIZED,
)
from gravity_realtime.hub import Client, Position
from gravity_realtime.keys import LookupUnavailable
from gravity_service.errors import error_body, json_response

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter()


PAGE_SIZE = 100
"""History messages asked of the registry at a time (its largest page)."""

RETRY_AFTER_FULL_SECONDS = 5
"""``Retry-After`` of a socket refused because its key holds the most it may."""

RETRY_AFTER_UNAVAILABLE_SECONDS = 1
"""``Retry-After`` of a socket refused because the registry could not be asked."""


class _Refusal(Exception):
    """A socket refused: HTTP ``status`` before the upgrade, or ``close_code`` where only that works."""

    def __init__(
        self,
        status: int,
        close_code: int,
        code: str,
        message: str,
        retry_after: int | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(message)
        self.status, self.close_code, self.code, self.message = status, close_code, code, message
        self.retry_after, self.details = retry_after, details


def _unauthorized() -> _Refusal:
    return _Refusal(401, CLOSE_UNAUTHORIZED, "unauthorized", "a valid API key is required")


def _unknown_since() -> _Refusal:
    return _Refusal(404, CLOSE_NOT_FOUND, "not_found", "since is not a message of this tenant")


def _unavailable(message: str) -> _Refusal:
    return _Refusal(503, CLOSE_TRY_AGAIN, "unavailable", message, RETRY_AFTER_UNAVAILABLE_SECONDS)


class _RegistryFailed(Exception):
    """The registry's messages API failed while a resume was being read."""


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


def _position(message: dict[str, Any]) -> Position:
    return (message["receivedAt"], message["messageId"])


class _History:
    """The tenant's messages after ``since``, oldest first, a page at a time from the registry's read
    model (with the client's own key, so the registry decides what the key may see)."""

    def __init__(self, http: httpx.AsyncClient, api_key: str, since: str) -> None:
        self._http, self._since = http, since
        self._auth = {"Authorization": f"Bearer {api_key}"}
        self._first: dict[str, Any] | None = None

    async def _get(self, url: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        try:
            r = await self._http.get(url, params=params, headers=self._auth)
        except httpx.HTTPError as exc:
            raise _RegistryFailed(repr(exc)) from exc
        if r.status_code == 404:
            raise _unknown_since()
        if r.status_code == 401:
            raise _unauthorized()
        if r.status_code != 200:
            raise _RegistryFailed(f"{url} answered {r.status_code}")
        body: dict[str, Any] = r.json()
        return body

    async def _page(self, cursor: str | None) -> dict[str, Any]:
        params = {"after": self._since, "limit": str(PAGE_SIZE), **({"cursor": cursor} if cursor else {})}
        return await self._get("/v1/sms/messages", params)

    async def open(self) -> Position:
        """The position of ``since``, and the first page read (both before the upgrade, so an unknown
        ``since`` is answered with HTTP 404)."""
        position = _position(await self._get(f"/v1/sms/messages/{quote(self._since, safe='')}"))
        self._first = await self._page(None)
        return position

    async def messages(self) -> AsyncGenerator[dict[str, Any], None]:
        """Every message after ``since``, oldest first; the next page is read when this one is sent."""
        page = self._first or await self._page(None)
        self._first = None
        while True:
            for message in page["messages"]:
                yield message
            if page["nextCursor"] is None:
                return
            page = await self._page(page["nextCursor"])


async def _refuse(ws: WebSocket, refusal: _Refusal) -> None:
    """HTTP status before the upgrade where the server supports it, else accept and close with the code."""
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        headers = {"Retry-After": str(refusal.retry_after)} if refusal.retry_after is not None else None
        body = error_body(refusal.code, refusal.message, refusal.details)
        await ws.send_denial_response(json_response(body, refusal.status, headers))
    else:
        await ws.accept()
        await ws.close(refusal.close_code)


def _bearer(ws: WebSocket) -> str | None:
    scheme, _, token = ws.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return ws.query_params.get("token") or None


async def _authenticate(state: State, api_key: str | None) -> tuple[str, str, str]:
    """(apiKey, keyId, tenantId): from the change stream, else from the registry's key lookup."""
    if api_key is None:
        raise _unauthorized()
    found: tuple[str, str] | None = state.keys.lookup(api_key)
    if found is None and state.registry_keys is not None:
        try:
            found = await state.registry_keys.lookup(api_key)
        except LookupUnavailable as exc:
            raise _unavailable(str(exc)) from exc
    if found is None:
        raise _unauthorized()
    return api_key, *found


def _too_many(limit: int) -> _Refusal:
    return _Refusal(
        429,
        CLOSE_TOO_MANY,
        "too_many_connections",
        f"this API key already holds {limit} open WebSockets on this server; close one first",
        RETRY_AFTER_FULL_SECONDS,
        {"limit": limit},
    )


@router.websocket("/v1/ws")
async def stream(ws: WebSocket) -> None:
    """One tenant's live ``sms_inbound`` stream."""
    state, settings = ws.app.state, ws.app.state.settings
    try:
        api_key, key_id, tenant_id = await _authenticate(state, _bearer(ws))
    except _Refusal as refusal:
        await _refuse(ws, refusal)
        return
    # counted and added with no await in between, so concurrent upgrades cannot overshoot the limit
    if state.hub.count_key(key_id) >= settings.max_connections_per_key:
        await _refuse(ws, _too_many(settings.max_connections_per_key))
        return
    client = Client(
        ws,
        tenant_id=tenant_id,
        key_id=key_id,
        max_queued=settings.max_queued_frames,
        abort_after=settings.close_grace_seconds,
    )
    state.hub.add(client)
    try:
        since = ws.query_params.get("since")
        history = _History(state.http, api_key, since) if since else None
        if history is not None:
            try:
                client.sent(await history.open())
            except _Refusal as refusal:
                await _refuse(ws, refusal)
                return
            except _RegistryFailed as exc:
                log.warning("resume of %s refused: %s", tenant_id, exc)
                await _refuse(ws, _unavailable("the message history cannot be read now; try again"))
                return
        await ws.accept()
        await ws.send_text(f'{{"type":"connected","tenantId":"{tenant_id}"}}')
        if history is not None:
            code = await _replay(
                ws, client, history, settings.max_resume_messages, settings.ping_timeout_seconds
            )
            if code is not None:
                await client.close_now(code)
                return
        writer = asyncio.create_task(client.write_loop())
        reader = asyncio.create_task(_drain_incoming(ws, settings.max_client_frame_bytes))
        await asyncio.wait({writer, reader}, return_when=asyncio.FIRST_COMPLETED)
        if not writer.done():  # the client went away, or sent a message too large (1009)
            too_big = reader.done() and reader.exception() is None and reader.result() is not None
            client.close(CLOSE_TOO_BIG if too_big else 1000)
            await writer
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    except (WebSocketDisconnect, OSError) as exc:
        log.info("websocket of %s ended: %r", tenant_id, exc)
    finally:
        state.hub.remove(client)


async def _replay(ws: WebSocket, client: Client, history: _History, limit: int, timeout: float) -> int | None:
    """Send the history after ``since``; None when it was all sent, else the code to close with: 4413
    past ``limit`` messages, 1013 when the registry failed, or the code the client was closed with
    meanwhile (its key revoked, the server stopping). Live frames wait in the client's queue."""
    count = 0
    try:
        async with contextlib.aclosing(history.messages()) as messages:
            async for message in messages:
                if client.close_code is not None:
                    return client.close_code
                if count == limit:
                    log.info(
                        "resume of %s is further back than %d messages: closing with 4413",
                        client.tenant_id,
                        limit,
                    )
                    return CLOSE_RESUME_TOO_FAR
                position = _position(message)
                if not client.admits(position):
                    continue
                try:
                    await asyncio.wait_for(ws.send_text(_frame(message).decode()), timeout)
                except TimeoutError:  # the client does not read
                    client.drop()
                    return client.close_code
                client.sent(position)
                count += 1
    except _RegistryFailed as exc:
        log.warning("resume of %s broke off: %s", client.tenant_id, exc)
        return CLOSE_TRY_AGAIN
    except _Refusal as refusal:  # the key was revoked, or since deleted, while the pages were read
        return refusal.close_code
    return client.close_code


async def _drain_incoming(ws: WebSocket, limit: int) -> int | None:
    """Read (and ignore) what the client sends, to notice when it goes away; 1009 for a message larger
    than ``limit`` bytes (the server's own limit, ``ws_max_size``, normally closes first)."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return None
        text, data = message.get("text"), message.get("bytes")
        size = len(text.encode()) if text is not None else len(data or b"")
        if size > limit:
            return CLOSE_TOO_BIG
