"""Keys the change stream has not brought yet: asked of the registry, cached briefly, rate-limited.

The contract makes a key work on the WebSocket as soon as the API returned it, but realtime learns keys
from ``gravity.registry.api-keys.v1`` a moment later. For a key it does not know, realtime asks the
registry (``GET <GRAVITY_REALTIME_KEY_LOOKUP_PATH>`` with the key as bearer, answered with the key's
``keyId`` and ``tenantId``) before refusing:

- one request per unknown key at a time (concurrent sockets with the same key share it);
- answers are cached by the key's SHA-256, a confirmation for ``key_cache_seconds``, a refusal for
  ``key_miss_cache_seconds``, so a client retrying a bad key does not reach the registry each time;
- every lookup takes a token from one bucket for the whole process, so unknown keys cannot be used to
  flood the registry: with the bucket empty the socket is refused with 503 and ``Retry-After``;
- a revoked key is never confirmed from the cache or from an answer that crossed its revocation.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

import httpx

from gravity_events.ids import KEY_ID_RE, TENANT_ID_RE

__all__ = ["LookupUnavailable", "RegistryKeys", "TokenBucket"]

log = logging.getLogger(__name__)

MAX_KEY_LENGTH = 512
"""A presented key longer than this is refused without asking (real keys are about 50 characters)."""

LOOKUP_TIMEOUT_SECONDS = 2.0
"""One lookup's budget: the client's upgrade waits for it."""

KeyOwner = tuple[str, str]
"""(keyId, tenantId)."""


class LookupUnavailable(Exception):
    """The registry could not be asked now (rate limit reached, unreachable, or an unexpected answer);
    the socket is refused with 503 rather than 401, since the key may well be valid."""


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate, self._burst, self._clock = rate, float(burst), clock
        self._tokens, self._at = float(burst), clock()

    def take(self) -> bool:
        """Take one token; False when none is left."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


V = TypeVar("V")


class _Expiring(Generic[V]):
    """Digest → value, each entry living ``ttl`` seconds; entries expire in insertion order, so purging
    looks only at the oldest."""

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()

    def __contains__(self, digest: str) -> bool:
        return self.get(digest) is not None

    def __len__(self) -> int:
        return len(self._entries)

    def _purge(self, now: float) -> None:
        while self._entries:
            digest, (expires, _) = next(iter(self._entries.items()))
            if expires > now:
                return
            del self._entries[digest]

    def get(self, digest: str) -> V | None:
        """The live value for ``digest``, or None."""
        self._purge(time.monotonic())
        entry = self._entries.get(digest)
        return entry[1] if entry is not None else None

    def put(self, digest: str, value: V) -> None:
        now = time.monotonic()
        self._purge(now)
        self._entries.pop(digest, None)
        self._entries[digest] = (now + self._ttl, value)

    def drop(self, digest: str) -> None:
        self._entries.pop(digest, None)


class RegistryKeys:
    """Asks the registry who a key belongs to; see the module docstring."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        path: str,
        hit_seconds: float,
        miss_seconds: float,
        bucket: TokenBucket,
        is_revoked: Callable[[str], bool],
    ) -> None:
        self._http, self._path, self._bucket, self._is_revoked = http, path, bucket, is_revoked
        self._hits: _Expiring[KeyOwner] = _Expiring(hit_seconds)
        self._misses: _Expiring[bool] = _Expiring(miss_seconds)
        self._digest_of: dict[str, str] = {}
        self._pending: dict[str, asyncio.Task[KeyOwner | None]] = {}
        self.requests = 0
        """Lookups sent to the registry (for ``/readyz`` and tests)."""

    def __len__(self) -> int:
        return len(self._hits) + len(self._misses)

    async def lookup(self, api_key: str) -> KeyOwner | None:
        """(keyId, tenantId) of ``api_key`` as the registry knows it, or None if it refuses the key.

        Raises :class:`LookupUnavailable` when the registry cannot be asked now.
        """
        if len(api_key) > MAX_KEY_LENGTH:
            return None
        digest = hashlib.sha256(api_key.encode()).hexdigest()
        owner = self._hits.get(digest)
        if owner is not None:
            return None if self._is_revoked(owner[0]) else owner
        if digest in self._misses:
            return None
        task = self._pending.get(digest)
        if task is None:
            if not self._bucket.take():
                raise LookupUnavailable("too many unknown API keys are being checked; try again shortly")
            task = asyncio.create_task(self._ask(api_key, digest))
            self._pending[digest] = task
            task.add_done_callback(lambda done: self._settled(digest, done))
        # shielded: one client giving up does not cancel the answer the others wait for
        return await asyncio.shield(task)

    def _settled(self, digest: str, task: asyncio.Task[KeyOwner | None]) -> None:
        self._pending.pop(digest, None)
        if not task.cancelled():
            task.exception()  # retrieved here too, in case every waiting client went away

    def forget(self, key_id: str) -> None:
        """Drop what is cached for ``key_id`` (it was revoked)."""
        digest = self._digest_of.pop(key_id, None)
        if digest is not None:
            self._hits.drop(digest)

    async def _ask(self, api_key: str, digest: str) -> KeyOwner | None:
        self.requests += 1
        try:
            r = await self._http.get(
                self._path, headers={"Authorization": f"Bearer {api_key}"}, timeout=LOOKUP_TIMEOUT_SECONDS
            )
        except httpx.HTTPError as exc:
            log.warning("API key lookup failed: %r", exc)
            raise LookupUnavailable("the registry could not be asked about this API key") from exc
        if 400 <= r.status_code < 500 and r.status_code not in (408, 429):
            # the key is refused (401), or the route is missing (404, 405 next to DELETE /v1/api-keys/{id})
            self._misses.put(digest, True)
            return None
        owner = _owner(r) if r.status_code == 200 else None
        if owner is None:
            log.warning("API key lookup answered %s with an unexpected body", r.status_code)
            raise LookupUnavailable("the registry could not be asked about this API key")
        if self._is_revoked(owner[0]):  # the revocation overtook this answer
            self._misses.put(digest, True)
            return None
        self._hits.put(digest, owner)
        self._digest_of[owner[0]] = digest
        if len(self._digest_of) > 2 * len(self._hits) + 16:  # expired confirmations leave their keyId
            self._digest_of = {k: d for k, d in self._digest_of.items() if d in self._hits}
        return owner


def _owner(r: httpx.Response) -> KeyOwner | None:
    """(keyId, tenantId) from a lookup answer, or None when it does not have that shape."""
    try:
        body = r.json()
        key_id, tenant_id = body["keyId"], body["tenantId"]
    except (ValueError, KeyError, TypeError):
        return None
    if not (isinstance(key_id, str) and isinstance(tenant_id, str)):
        return None
    if not (KEY_ID_RE.match(key_id) and TENANT_ID_RE.match(tenant_id)):
        return None
    return key_id, tenant_id
