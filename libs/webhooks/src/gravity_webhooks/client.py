"""The one delivery client: what fanout sends and what ``test-webhook`` sends are the same bytes.

One POST: ``Content-Type: application/json``, Standard Webhooks headers, a ``User-Agent`` naming the
gateway, a 5-second budget for the whole attempt (connect + send + first 4 KiB of the answer), no
redirects followed (a 3xx is a failed attempt), and — in production — a connect-time check that the
address actually dialled is public, so DNS rebinding cannot reach an internal service. A production
client that cannot install that check (httpx or httpcore internals changed) refuses to be built.

What a hostile endpoint can cost: one attempt's budget in time whatever it trickles (status line,
headers, informational answers, body), 100 KiB of response head (httpcore's h11 limit, then a protocol
error), one 64 KiB read of body (then it is cut to 4 KiB), and no decompression (``identity`` is asked
for and the raw bytes are read).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from gravity_webhooks.retry_after import parse_retry_after
from gravity_webhooks.signing import signature_header
from gravity_webhooks.urls import BlockedAddressError, Resolver, is_public_address, resolve_host

__all__ = [
    "RESPONSE_BODY_LIMIT",
    "DeliveryClient",
    "DeliveryResult",
    "PublicOnlyBackend",
    "install_public_only_backend",
]

RESPONSE_BODY_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What an endpoint answered (or why it did not)."""

    ok: bool
    status: int | None
    body: str
    error: str | None
    duration_ms: float
    retry_after: float | None = None


class PublicOnlyBackend(httpcore.AsyncNetworkBackend):
    """Resolves the host itself, refuses non-public addresses, then dials the address it checked.

    TLS still verifies the certificate against the URL's host name: httpcore starts TLS with the
    request's origin, not with the address dialled here.
    """

    def __init__(self, resolver: Resolver = resolve_host) -> None:
        self._resolver = resolver
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Connect to a checked address of ``host``."""
        addresses = await self._resolver(host, port)
        blocked = [a for a in addresses if not is_public_address(a)]
        if not addresses or blocked:
            raise BlockedAddressError(f"{host} resolves to a non-public address")
        return await self._inner.connect_tcp(
            addresses[0],
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        """Unix sockets are never a webhook destination."""
        raise BlockedAddressError("unix sockets are not webhook destinations")

    async def sleep(self, seconds: float) -> None:
        """Delegate."""
        await self._inner.sleep(seconds)


def install_public_only_backend(transport: httpx.AsyncBaseTransport, backend: PublicOnlyBackend) -> None:
    """Make every connection ``transport`` opens go through ``backend``, or raise ``RuntimeError``.

    httpx does not expose httpcore's ``network_backend``, so this sets it on the pool httpx built
    (``transport._pool._network_backend``) and then asks the pool for a connection object (no I/O) to
    prove the pool hands that backend to the connections it dials. If httpx or httpcore rearranged
    those internals, or the transport goes through a proxy (which would dial the proxy, not the
    endpoint), the SSRF guard would silently be absent: refuse to build the client instead.
    """
    pool = getattr(transport, "_pool", None)
    has_backend = isinstance(getattr(pool, "_network_backend", None), httpcore.AsyncNetworkBackend)
    if not has_backend or not isinstance(pool, httpcore.AsyncConnectionPool):
        raise RuntimeError(
            "cannot install the SSRF guard: the httpx transport has no httpcore connection pool with a"
            f" _network_backend (httpx {httpx.__version__}, httpcore {httpcore.__version__});"
            " gravity_webhooks.client must be updated for these versions"
        )
    pool._network_backend = backend
    for scheme, port in ((b"https", 443), (b"http", 80)):
        probe = pool.create_connection(httpcore.Origin(scheme, b"example.com", port))
        dials_through = getattr(probe, "_network_backend", None) is backend
        if type(probe) is not httpcore.AsyncHTTPConnection or not dials_through:
            raise RuntimeError(
                "cannot install the SSRF guard: the httpcore pool does not dial through the installed"
                f" network backend ({type(probe).__name__}; httpcore {httpcore.__version__})"
            )


class DeliveryClient:
    """Signs and POSTs webhook payloads. One instance per process; share it (it pools connections)."""

    def __init__(
        self,
        *,
        production: bool,
        user_agent: str,
        timeout: float = 5.0,
        max_connections: int = 1000,
        max_keepalive_per_pool: int = 200,
        resolver: Resolver = resolve_host,
    ) -> None:
        self._timeout = timeout
        self._user_agent = user_agent
        transport = httpx.AsyncHTTPTransport(
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_keepalive_per_pool
            ),
            retries=0,
        )
        if production:
            install_public_only_backend(transport, PublicOnlyBackend(resolver))
        self._client = httpx.AsyncClient(
            transport=transport, timeout=timeout, follow_redirects=False, trust_env=False
        )

    async def aclose(self) -> None:
        """Close pooled connections."""
        await self._client.aclose()

    async def deliver(
        self,
        url: str,
        body: bytes,
        *,
        message_id: str,
        secrets: Sequence[str],
        timestamp: int | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> DeliveryResult:
        """POST ``body`` to ``url`` signed with every secret in ``secrets``; never raises for I/O.

        ``extra_headers`` (e.g. ``traceparent``) are sent too; they cannot replace the content type, the
        signature headers or the others set here, whatever their case.
        """
        stamp = int(time.time()) if timestamp is None else timestamp
        headers = {k.lower(): v for k, v in (extra_headers or {}).items()}
        headers |= {
            "content-type": "application/json",
            # Only raw bytes are read back (aiter_raw): never decompressed, so never advertise gzip.
            "accept-encoding": "identity",
            "user-agent": self._user_agent,
            "webhook-id": message_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": signature_header(secrets, message_id, stamp, body),
        }
        started = time.perf_counter()

        def elapsed() -> float:
            return round((time.perf_counter() - started) * 1000, 2)

        try:
            async with asyncio.timeout(self._timeout):
                async with self._client.stream("POST", url, content=body, headers=headers) as resp:
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in resp.aiter_raw():
                        chunks.append(chunk)
                        size += len(chunk)
                        if size >= RESPONSE_BODY_LIMIT:
                            break
                    text = b"".join(chunks)[:RESPONSE_BODY_LIMIT].decode("utf-8", errors="replace")
                    ok = 200 <= resp.status_code < 300
                    return DeliveryResult(
                        ok=ok,
                        status=resp.status_code,
                        body=text,
                        error=None if ok else f"HTTP {resp.status_code}",
                        duration_ms=elapsed(),
                        retry_after=parse_retry_after(resp.headers.get("retry-after")),
                    )
        except TimeoutError:
            why = f"timed out after {self._timeout:g} s"
        except BlockedAddressError as exc:
            why = f"refused: {exc}"
        except httpx.ConnectError as exc:
            why = f"connection failed: {exc or type(exc).__name__}"
        except httpx.HTTPError as exc:
            why = f"{type(exc).__name__}: {exc}"
        except OSError as exc:  # DNS failure and the like
            why = f"connection failed: {exc}"
        return DeliveryResult(ok=False, status=None, body=why, error=why, duration_ms=elapsed())
