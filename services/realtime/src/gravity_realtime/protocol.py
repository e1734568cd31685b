"""uvicorn's websockets-sansio protocol with one addition: a way for the app to drop a connection.

ASGI can only ask for a graceful close, which needs the close frame to be written; a client that stops
reading leaves the send buffer full, so that frame never goes out and asyncio's ``transport.close()``
waits for the buffer forever. This protocol puts ``transport.abort`` in the connection's scope as the
extension ``gravity.abort``; the hub calls it when a closing socket has not finished within its grace
period. Everything else is uvicorn's code, unchanged.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

__all__ = ["ABORT_EXTENSION", "AbortableWebSocketProtocol"]

ABORT_EXTENSION = "gravity.abort"


class AbortableWebSocketProtocol(WebSocketsSansIOProtocol):
    """Adds ``scope["extensions"]["gravity.abort"]`` (a callable) to every accepted connection."""

    def handle_connect(self, event: Any) -> None:
        """Build the scope as uvicorn does, then add the abort extension before the app runs."""
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][ABORT_EXTENSION] = self.transport.abort
