"""Every WebSocket close code realtime sends, with the reason label its metrics give it.

The table clients read is ``docs/websocket.md``; these are the same codes.
"""

from __future__ import annotations

__all__ = [
    "CLOSE_BUFFER_FULL",
    "CLOSE_NORMAL",
    "CLOSE_NOT_FOUND",
    "CLOSE_RESTART",
    "CLOSE_RESUME_TOO_FAR",
    "CLOSE_REVOKED",
    "CLOSE_TOO_BIG",
    "CLOSE_TOO_MANY",
    "CLOSE_TRY_AGAIN",
    "CLOSE_UNAUTHORIZED",
    "reason",
]

CLOSE_NORMAL = 1000
"""The client closed, or the server ended a finished stream."""
CLOSE_BUFFER_FULL = 1008
"""The client did not read its frames fast enough (its queue filled)."""
CLOSE_TOO_BIG = 1009
"""A client frame larger than ``GRAVITY_REALTIME_MAX_CLIENT_FRAME_BYTES``."""
CLOSE_RESTART = 1012
"""This copy is stopping: reconnect (to any copy) and resume with ``since``."""
CLOSE_TRY_AGAIN = 1013
"""History could not be read from the registry: reconnect later with ``since``."""
CLOSE_UNAUTHORIZED = 4401
"""Missing or invalid API key."""
CLOSE_REVOKED = 4401
"""The key was revoked while the socket was open (same code as an invalid key)."""
CLOSE_NOT_FOUND = 4404
"""``since`` names no message of this tenant."""
CLOSE_RESUME_TOO_FAR = 4413
"""The resume sent its bound of history messages: page the REST API, then reconnect with ``since``."""
CLOSE_TOO_MANY = 4429
"""Too many open sockets for this key."""

_REASONS = {
    None: "client",
    CLOSE_NORMAL: "client",
    CLOSE_BUFFER_FULL: "slow",
    CLOSE_RESTART: "shutdown",
    CLOSE_REVOKED: "revoked",
    CLOSE_TOO_BIG: "policy",
    CLOSE_RESUME_TOO_FAR: "policy",
    CLOSE_TOO_MANY: "policy",
    CLOSE_NOT_FOUND: "policy",
    CLOSE_TRY_AGAIN: "error",
}


def reason(code: int | None) -> str:
    """The ``reason`` label of ``gravity_realtime_clients_closed_total`` for a close code."""
    return _REASONS.get(code, "error")
