"""Realtime's state from the topics: API keys (hashes only) and the live ``sms_inbound`` stream."""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable

from gravity_events.kafka import Envelope
from gravity_events.models import ApiKeyActive, ApiKeyRevoked, SmsInbound
from gravity_realtime.hub import Hub

__all__ = ["KeyTable", "LiveRouter", "RecentIds"]

log = logging.getLogger(__name__)


class KeyTable:
    """API-key SHA-256 → (keyId, tenantId), from the registry's change stream, and the ids of revoked
    keys (so an answer of the registry's key lookup that crossed a revocation is not trusted)."""

    def __init__(self, hub: Hub) -> None:
        self._by_hash: dict[str, tuple[str, str]] = {}
        self._hash_of: dict[str, str] = {}
        self._revoked: set[str] = set()
        self._hub = hub
        self.on_revoked: list[Callable[[str], None]] = []
        """Called with the keyId of each revocation (the lookup cache forgets the key)."""

    def apply(self, envelope: Envelope) -> None:
        """Apply one change; a revocation also closes the key's open sockets."""
        event = envelope.event
        if isinstance(event, ApiKeyActive):
            self._by_hash[event.key_sha256] = (event.key_id, event.tenant_id)
            self._hash_of[event.key_id] = event.key_sha256
        elif isinstance(event, ApiKeyRevoked):
            digest = self._hash_of.pop(event.key_id, None)
            if digest is not None:
                self._by_hash.pop(digest, None)
            self._revoked.add(event.key_id)
            for forget in self.on_revoked:
                forget(event.key_id)
            self._hub.close_key(event.key_id)

    def is_revoked(self, key_id: str) -> bool:
        """True once the key's revocation has been read."""
        return key_id in self._revoked

    def lookup(self, api_key: str | None) -> tuple[str, str] | None:
        """(keyId, tenantId) of a presented key, or None. Dict lookup by digest, not by secret."""
        if not api_key:
            return None
        return self._by_hash.get(hashlib.sha256(api_key.encode()).hexdigest())


class RecentIds:
    """A bounded set of recently broadcast messageIds (the topic is at-least-once)."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def first_time(self, message_id: str) -> bool:
        """True the first time ``message_id`` is seen (within the window)."""
        if message_id in self._ids:
            return False
        self._ids[message_id] = None
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
        return True


class LiveRouter:
    """Routes each ``sms_inbound`` record's exact bytes to the tenant's clients, once."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._recent = RecentIds()

    def route(self, event: SmsInbound, value: bytes, received_at: str | None = None) -> None:
        """Broadcast ``value`` (the record as published) unless it was already broadcast; ``received_at``
        (from the record's header) places it in the gateway's order."""
        if self._recent.first_time(event.message_id):
            position = (received_at, event.message_id) if received_at is not None else None
            self._hub.broadcast(event.tenant_id, value, position)
