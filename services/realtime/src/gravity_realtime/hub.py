"""Open connections, grouped by tenant and by API key; bounded per-client queues.

A broadcast puts the same bytes into every queue of the tenant (encoded once, no task per frame); one
writer task per connection drains its queue. A client whose queue is full is disconnected (1008) rather
than allowed to grow the server's memory.

Each connection remembers the position (receivedAt, messageId) of the last frame it sent. A tenant's
stream is published in the gateway's order, strictly increasing, so a frame at or before that position
is one the client already has: a batch the registry published again after dying between publish and
mark, a frame a resume's history already sent, or one at or before ``since`` from a copy that is behind
the one the client left. It is dropped; one position per connection, whatever the duplicate window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, defaultdict
from typing import TYPE_CHECKING

from starlette.websockets import WebSocket, WebSocketState

from gravity_realtime.closecodes import CLOSE_BUFFER_FULL, CLOSE_RESTART, CLOSE_REVOKED, reason
from gravity_realtime.protocol import ABORT_EXTENSION

if TYPE_CHECKING:
    from gravity_service.metrics import RealtimeMetrics

__all__ = ["Client", "Hub", "Position"]

Position = tuple[str, str]
"""(receivedAt as the contract renders it, messageId): the gateway's order; the fixed-width timestamp
compares as text."""

RECENT_PER_CLIENT = 128
"""messageIds one connection remembers having sent (a few KiB): enough for a batch the registry
publishes twice, which arrives right behind the first."""

_Item = tuple[Position | None, bytes]
"""A queued frame: its position (when known) and its bytes."""

log = logging.getLogger(__name__)


def _abort(ws: WebSocket) -> bool:
    """Drop the TCP connection at once; True if the server offers it (see :mod:`.protocol`)."""
    abort = ws.scope.get("extensions", {}).get(ABORT_EXTENSION)
    if not callable(abort):
        return False
    abort()
    return True


class Client:
    """One socket: its tenant, its key, its outbound queue."""

    def __init__(
        self, ws: WebSocket, *, tenant_id: str, key_id: str, max_queued: int, abort_after: float = 5.0
    ) -> None:
        self.ws = ws
        self.abort_after = abort_after
        self.tenant_id = tenant_id
        self.key_id = key_id
        self.queue: asyncio.Queue[_Item | None] = asyncio.Queue(max_queued)
        self.last_sent: Position | None = None
        """The last history frame sent (or ``since``): a live frame at or before it was in the history."""
        self._recent: OrderedDict[str, None] = OrderedDict()
        """The messageIds this connection sent last (at most ``RECENT_PER_CLIENT``)."""
        self.close_code: int | None = None
        self.closed = asyncio.Event()

    def offer(self, frame: bytes, position: Position | None = None) -> None:
        """Queue a frame, or mark the client for disconnection when its queue is full."""
        if self.close_code is not None:
            return
        try:
            self.queue.put_nowait((position, frame))
        except asyncio.QueueFull:
            log.info("client of %s does not read: disconnecting", self.tenant_id)
            self.close(CLOSE_BUFFER_FULL)

    def admits(self, position: Position | None) -> bool:
        """False for a frame the client has: one whose messageId this connection sent lately, or one at
        or before the end of the history it was sent. A frame without a position (a record without the
        receivedAt header) cannot be placed and is sent.

        Live frames do not move that boundary: a registry copy that lost its order lock to a database
        restart while its publish was in flight can append a batch after a later-stamped one, and a
        boundary at the last live frame would drop that batch for good. The registry's republished
        batches are dropped by messageId, here and process-wide."""
        if position is None:
            return True
        if position[1] in self._recent:
            return False
        return self.last_sent is None or position > self.last_sent

    def sent(self, position: Position | None) -> None:
        """A history frame at ``position`` (or ``since``) went out: it moves the boundary."""
        if position is not None:
            self.last_sent = position
            self.sent_live(position)

    def sent_live(self, position: Position | None) -> None:
        """A live frame at ``position`` went out."""
        if position is None:
            return
        self._recent[position[1]] = None
        if len(self._recent) > RECENT_PER_CLIENT:
            self._recent.popitem(last=False)

    def close(self, code: int) -> None:
        """Ask the writer to close the socket with ``code``; drop the connection if it cannot."""
        if self.close_code is None:
            self.close_code = code
            asyncio.get_running_loop().call_later(self.abort_after, self._abort_if_open)
            # wake the writer even if the queue is full
            while True:
                try:
                    self.queue.put_nowait(None)
                    break
                except asyncio.QueueFull:
                    self.queue.get_nowait()

    def drop(self) -> None:
        """Drop the connection now (a client that does not take what is sent to it)."""
        if self.close_code is None:
            self.close_code = CLOSE_BUFFER_FULL
        if _abort(self.ws):
            log.info("client of %s does not read: connection dropped", self.tenant_id)

    async def close_now(self, code: int) -> None:
        """Close with ``code`` without sending what is queued (frames after it would leave a gap)."""
        if self.close_code is None:
            self.close_code = code
        try:
            if self.ws.application_state != WebSocketState.DISCONNECTED:
                await asyncio.wait_for(self.ws.close(self.close_code), self.abort_after)
        except TimeoutError:  # its socket buffer is full: the close frame cannot be written
            self.drop()
        except Exception:  # the peer went away
            log.debug("socket close failed", exc_info=True)
        finally:
            self.closed.set()

    def _abort_if_open(self) -> None:
        if not self.closed.is_set() and _abort(self.ws):
            log.info("client of %s did not take its close frame: connection dropped", self.tenant_id)

    async def write_loop(self) -> None:
        """Send queued frames in order until closed; skip frames the client already has."""
        try:
            while True:
                item = await self.queue.get()
                if item is None:
                    break
                position, frame = item
                if not self.admits(position):
                    continue
                await self.ws.send_text(frame.decode())
                self.sent_live(position)
        except Exception:  # the peer went away: nothing to deliver to any more
            log.debug("socket write failed", exc_info=True)
        finally:
            if self.ws.application_state != WebSocketState.DISCONNECTED:
                with contextlib.suppress(Exception):
                    await self.ws.close(self.close_code or 1000)
            self.closed.set()


class Hub:
    """Every open client of this process, by tenant and by API key."""

    def __init__(self, metrics: RealtimeMetrics | None = None) -> None:
        self._by_tenant: dict[str, set[Client]] = defaultdict(set)
        self._by_key: dict[str, set[Client]] = defaultdict(set)
        self._metrics = metrics

    def __len__(self) -> int:
        return sum(len(c) for c in self._by_tenant.values())

    def count_key(self, key_id: str) -> int:
        """Open sockets of ``key_id``."""
        return len(self._by_key.get(key_id, ()))

    def add(self, client: Client) -> None:
        """Start delivering the tenant's frames to ``client``."""
        self._by_tenant[client.tenant_id].add(client)
        self._by_key[client.key_id].add(client)
        if self._metrics is not None:
            self._metrics.connections.inc()

    def remove(self, client: Client) -> None:
        """Stop delivering to ``client``."""
        self._by_tenant[client.tenant_id].discard(client)
        if not self._by_tenant[client.tenant_id]:
            del self._by_tenant[client.tenant_id]
        if client not in self._by_key.get(client.key_id, ()):
            return
        self._by_key[client.key_id].discard(client)
        if not self._by_key[client.key_id]:
            del self._by_key[client.key_id]
        if self._metrics is not None:
            self._metrics.connections.dec()
            self._metrics.clients_closed.labels(reason(client.close_code)).inc()

    def broadcast(self, tenant_id: str, frame: bytes, position: Position | None = None) -> int:
        """Offer ``frame`` to every client of the tenant; return how many."""
        clients = self._by_tenant.get(tenant_id, ())
        for client in tuple(clients):
            client.offer(frame, position)
        if clients and self._metrics is not None:
            self._metrics.labels(self._metrics.frames_sent, tenant_id=tenant_id).inc(len(clients))
        return len(clients)

    def close_key(self, key_id: str, code: int = CLOSE_REVOKED) -> None:
        """Close every socket opened with ``key_id``."""
        for client in tuple(self._by_key.get(key_id, ())):
            client.close(code)

    def close_all(self, code: int = CLOSE_RESTART) -> None:
        """Close every socket (graceful drain: clients resume with ``since``)."""
        for clients in tuple(self._by_tenant.values()):
            for client in tuple(clients):
                client.close(code)
