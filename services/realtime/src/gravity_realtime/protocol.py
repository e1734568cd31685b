"""uvicorn's websockets-sansio protocol with three additions, and the uvicorn options realtime runs with.

1. A way for the app to drop a connection. ASGI can only ask for a graceful close, which needs the close
   frame to be written; a client that stops reading leaves the send buffer full, so that frame never goes
   out and asyncio's ``transport.close()`` waits for the buffer forever. This protocol puts
   ``transport.abort`` in the connection's scope as the extension ``gravity.abort``; the hub calls it
   when a closing socket has not finished within its grace period.
2. A client frame larger than ``ws_max_size`` closes with 1009 that the client actually receives.
   uvicorn writes the close frame and closes the TCP connection at once, while the client is still
   sending the rest of its frame: closing a socket with unread input makes the kernel answer with a
   reset, which can overtake the close frame, and the client then sees 1006. Here the server stops
   writing (FIN after the close frame) and keeps reading and discarding until the client closes, or
   until uvicorn's close timeout.
3. A refusal before the upgrade (HTTP 401/404/429/503) is logged once at INFO, not also as an ERROR.

Everything else is uvicorn's code, unchanged.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from gravity_realtime.settings import Settings

__all__ = ["ABORT_EXTENSION", "AbortableWebSocketProtocol", "uvicorn_options"]

ABORT_EXTENSION = "gravity.abort"

MAX_QUEUED_INCOMING = 32
"""Incoming messages uvicorn buffers for the app before it stops reading the socket."""


class AbortableWebSocketProtocol(WebSocketsSansIOProtocol):
    """Adds ``scope["extensions"]["gravity.abort"]`` (a callable) to every accepted connection, and fails
    an oversized frame with a close frame the client receives."""

    _failing = False

    def handle_connect(self, event: Any) -> None:
        """Build the scope as uvicorn does, then add the abort extension before the app runs."""
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][ABORT_EXTENSION] = self.transport.abort

    def handle_parser_exception(self) -> None:
        """The frame was refused (too large, or not valid WebSocket): send the close frame once, half-close,
        and let the client's own close (or the close timeout) end the connection."""
        if self._failing:
            return  # what the client still sends is discarded by the protocol's parser
        self._failing = True
        close = self.conn.close_sent
        if close is None:  # failed without a close frame (1006): nothing to tell the client
            super().handle_parser_exception()
            return
        self.queue.put_nowait({"type": "websocket.disconnect", "code": close.code, "reason": close.reason})
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.close_timer = self.loop.call_later(self.close_timeout, self.transport.close)

    async def send(self, message: Any) -> None:
        """uvicorn's send; a finished denial response (HTTP 401/404/429 instead of the upgrade) also
        completes the handshake, which uvicorn's own code leaves open and then logs an ERROR ("returned
        without completing handshake") for every refused socket."""
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body", False):
            self.handshake_complete = True


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The WebSocket options of :class:`uvicorn.Config` realtime needs: the protocol above, client frames
    limited to ``max_client_frame_bytes`` (1009 beyond), pings, and no compression (14 KiB vs 64 KiB a
    socket)."""
    return {
        "ws": AbortableWebSocketProtocol,
        "ws_max_size": settings.max_client_frame_bytes,
        "ws_per_message_deflate": False,
        "ws_ping_interval": settings.ping_interval_seconds,
        "ws_ping_timeout": settings.ping_timeout_seconds,
        "ws_max_queue": MAX_QUEUED_INCOMING,
    }
