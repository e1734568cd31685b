"""The RingCentral platform calls the registry makes, over httpx, with RingCentral's field names.

Every non-2xx answer, every transport failure and every answer the gateway cannot use becomes
:class:`RingCentralError` carrying the HTTP status (None when RingCentral could not be reached or did not
finish answering), RingCentral's error body, and ``Retry-After`` in seconds when it sent a usable one
(read with :func:`gravity_webhooks.parse_retry_after`: at most a day, nonsense ignored). Nothing here logs
a secret: tokens travel only in headers and form bodies, never in messages.

What one tenant's server can cost the gateway, whatever it does:

- one call's ``deadline`` in time (``asyncio.timeout`` around connect, send and the whole answer, so a
  server that trickles bytes is cut off too), on top of httpx's per-phase ``timeout``;
- ``max_response_bytes`` of answer (an error answer: :data:`ERROR_BODY_LIMIT`); a longer answer is a
  failed call, and gzip/deflate are inflated only up to the same limit;
- ``max_pages`` message-store pages per backfill (:class:`PagingLimitReached` after that);
- no redirects, no proxies from the environment, and in production only ``https`` to the allowed hosts,
  dialled through the same public-address-only connection logic webhook deliveries use.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx

from gravity_events.ids import format_timestamp, parse_timestamp, utcnow
from gravity_registry.rc_records import message_id_of, normalised_record, server_url_problem
from gravity_webhooks import BlockedAddressError, parse_retry_after
from gravity_webhooks.client import PublicOnlyBackend, install_public_only_backend

if TYPE_CHECKING:
    from gravity_registry.settings import Settings

__all__ = [
    "DEFAULT_ALLOWED_HOSTS",
    "ERROR_BODY_LIMIT",
    "JWT_GRANT",
    "SMS_EVENT_FILTER",
    "PagingLimitReached",
    "RingCentralClient",
    "RingCentralError",
    "Subscription",
    "Tokens",
    "message_id_of",
    "server_url_problem",
]

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SMS_EVENT_FILTER = "/restapi/v1.0/account/~/extension/~/message-store/instant?type=SMS"
DEFAULT_ALLOWED_HOSTS = frozenset({"platform.ringcentral.com", "platform.devtest.ringcentral.com"})

ERROR_BODY_LIMIT = 16_384
"""The most of an error answer read (and shown to the tenant as ``details.ringcentralError``)."""

_MAX_TTL_SECONDS = 10 * 365 * 86_400  # a token lifetime beyond this is read as this
_EARLIEST, _LATEST = datetime(2000, 1, 1, tzinfo=UTC), datetime(9000, 1, 1, tzinfo=UTC)


class RingCentralError(Exception):
    """A RingCentral call failed; ``status`` is None when the platform could not be reached (or did not
    finish answering within the deadline)."""

    def __init__(
        self, message: str, *, status: int | None, body: Any = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.retry_after = retry_after

    @property
    def code(self) -> str | None:
        """RingCentral's ``errorCode`` (or OAuth ``error``), if it sent one (at most 100 characters)."""
        if isinstance(self.body, dict):
            value = self.body.get("errorCode") or self.body.get("error")
            return str(value)[:100] if value is not None else None
        return None

    def details(self) -> dict[str, Any]:
        """What the API shows a tenant: status and RingCentral's own error body."""
        return {"ringcentralStatus": self.status, "ringcentralError": self.body}


class PagingLimitReached(RingCentralError):
    """The message store still had more pages after the backfill's page limit; what was read stands."""


@dataclass(frozen=True, slots=True)
class Tokens:
    """An access token and, when granted, a refresh token, with their expiry times."""

    access_token: str
    access_expires_at: datetime
    refresh_token: str | None
    refresh_expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class Subscription:
    """The parts of RingCentral's subscription resource the gateway uses."""

    id: str
    status: str
    expires_at: datetime


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json(raw: bytes) -> Any:
    """Strict JSON: no NaN/Infinity; nesting too deep for Python is not JSON either."""
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError("not JSON") from exc


def _unexpected(what: str, status: int) -> RingCentralError:
    return RingCentralError(f"RingCentral answered {status} with an unexpected {what}", status=status)


def _seconds(value: Any, what: str) -> int:
    """A lifetime in seconds: a positive JSON integer (or digit string), at most ten years."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise _unexpected(f"{what}", 200)
    return min(value, _MAX_TTL_SECONDS)


def _subscription(data: Any) -> Subscription:
    if not isinstance(data, dict):
        raise _unexpected("subscription resource", 200)
    sub_id = message_id_of(data)
    status = data.get("status", "Active")
    expiration = data.get("expirationTime")
    if sub_id is None or not isinstance(status, str) or not isinstance(expiration, str):
        raise _unexpected("subscription resource", 200)
    try:
        expires_at = parse_timestamp(expiration)
    except (ValueError, OverflowError) as exc:
        raise _unexpected("subscription expirationTime", 200) from exc
    if not _EARLIEST <= expires_at <= _LATEST:
        raise _unexpected("subscription expirationTime", 200)
    return Subscription(id=sub_id, status=status[:100], expires_at=expires_at)


class RingCentralClient:
    """One client per registry process; every call names the tenant's ``server_url``."""

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        deadline: float = 30.0,
        max_response_bytes: int = 1_048_576,
        max_pages: int = 50,
        production: bool = False,
        allowed_hosts: Collection[str] = DEFAULT_ALLOWED_HOSTS,
        transport: httpx.AsyncBaseTransport | None = None,
        backend: PublicOnlyBackend | None = None,
    ) -> None:
        """``production`` limits calls to https on ``allowed_hosts`` and dials only public addresses
        (``backend``, by default the one webhook deliveries use); it refuses to build if it cannot."""
        self._deadline = deadline
        self._max_bytes = max_response_bytes
        self._max_pages = max_pages
        self._production = production
        self._allowed = frozenset(h.lower() for h in allowed_hosts)
        if transport is None:
            transport = httpx.AsyncHTTPTransport(retries=0)
        if production:
            install_public_only_backend(transport, backend or PublicOnlyBackend())
        self._http = httpx.AsyncClient(
            timeout=timeout, follow_redirects=False, transport=transport, trust_env=False
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> RingCentralClient:
        """The client ``settings`` describe (``GRAVITY_RC_*`` and ``GRAVITY_ENV``)."""
        return cls(
            timeout=settings.rc_timeout_seconds,
            deadline=settings.rc_call_deadline_seconds,
            max_response_bytes=settings.rc_max_response_bytes,
            max_pages=settings.rc_backfill_max_pages,
            production=settings.production,
            allowed_hosts=settings.rc_allowed_host_set,
        )

    async def aclose(self) -> None:
        """Close pooled connections."""
        await self._http.aclose()

    def server_url_problem(self, server_url: str) -> str | None:
        """Why this client will not call ``server_url``, or None."""
        return server_url_problem(server_url, production=self._production, allowed_hosts=self._allowed)

    async def _call(self, method: str, server_url: str, path: str, **kwargs: Any) -> Any:
        """One call: its JSON answer (None for an empty one), else :class:`RingCentralError`."""
        if (problem := self.server_url_problem(server_url)) is not None:
            raise RingCentralError(f"RingCentral was not called: {problem}", status=None)
        headers = {"Accept": "application/json", "Accept-Encoding": "identity", **kwargs.pop("headers", {})}
        try:
            async with asyncio.timeout(self._deadline):
                async with self._http.stream(method, server_url + path, headers=headers, **kwargs) as resp:
                    ok = resp.is_success
                    raw = await self._read(resp, self._max_bytes if ok else ERROR_BODY_LIMIT, strict=ok)
        except TimeoutError as exc:
            raise RingCentralError(
                f"RingCentral did not answer within {self._deadline:g} s", status=None
            ) from exc
        except BlockedAddressError as exc:
            raise RingCentralError(
                "RingCentral was not called: serverUrl resolves to a non-public address", status=None
            ) from exc
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            raise RingCentralError(
                f"RingCentral could not be reached: {type(exc).__name__}", status=None
            ) from exc
        if ok:
            if not raw.strip():
                return None
            try:
                return _json(raw)
            except ValueError as exc:
                raise RingCentralError(
                    f"RingCentral answered {resp.status_code} with a body that is not JSON",
                    status=resp.status_code,
                ) from exc
        body: Any
        try:
            body = _json(raw)
        except ValueError:
            body = raw.decode("utf-8", errors="replace")[:1000]
        raise RingCentralError(
            f"RingCentral answered {resp.status_code}",
            status=resp.status_code,
            body=body,
            retry_after=parse_retry_after(resp.headers.get("retry-after")),
        )

    async def _read(self, response: httpx.Response, limit: int, *, strict: bool) -> bytes:
        """At most ``limit`` bytes of the answer (inflated, if it came compressed anyway); more is an
        error when ``strict``, else cut off."""
        too_large = RingCentralError(
            f"RingCentral's answer is larger than {limit} bytes", status=response.status_code
        )
        declared = response.headers.get("content-length", "")
        if strict and declared.isdigit() and int(declared) > limit:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_raw():
            size += len(chunk)
            chunks.append(chunk)
            if size > limit:
                if strict:
                    raise too_large
                break
        raw = b"".join(chunks)
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("", "identity"):
            return raw[:limit]
        if encoding not in ("gzip", "deflate", "x-gzip"):
            raise RingCentralError(
                f"RingCentral's answer uses an unsupported Content-Encoding {encoding[:40]!r}",
                status=response.status_code,
            )
        try:
            inflated = zlib.decompressobj(wbits=47).decompress(raw, limit + 1)
        except zlib.error as exc:
            raise RingCentralError(
                "RingCentral's compressed answer is corrupt", status=response.status_code
            ) from exc
        if len(inflated) > limit and strict:
            raise too_large
        return inflated[:limit]

    # -- OAuth ---------------------------------------------------------------------------------

    async def _token(
        self, server_url: str, client_id: str, client_secret: str, form: dict[str, str]
    ) -> Tokens:
        data = await self._call(
            "POST",
            server_url,
            "/restapi/oauth/token",
            data=form,
            auth=httpx.BasicAuth(client_id, client_secret),
        )
        if not isinstance(data, dict):
            raise _unexpected("token response", 200)
        access, refresh = data.get("access_token"), data.get("refresh_token")
        if not isinstance(access, str) or not access or not isinstance(refresh, str | None):
            raise _unexpected("token response", 200)
        now = utcnow()
        expires_in = _seconds(data.get("expires_in", 3600), "expires_in")
        refresh_ttl = data.get("refresh_token_expires_in")
        refresh_expires = (
            now + timedelta(seconds=_seconds(refresh_ttl, "refresh_token_expires_in"))
            if refresh_ttl is not None
            else None
        )
        return Tokens(
            access_token=access,
            access_expires_at=now + timedelta(seconds=expires_in),
            refresh_token=refresh or None,
            refresh_expires_at=refresh_expires if refresh else None,
        )

    async def login_with_jwt(self, server_url: str, client_id: str, client_secret: str, jwt: str) -> Tokens:
        """JWT bearer grant (HTTP Basic clientId:clientSecret)."""
        return await self._token(
            server_url, client_id, client_secret, {"grant_type": JWT_GRANT, "assertion": jwt}
        )

    async def refresh(
        self, server_url: str, client_id: str, client_secret: str, refresh_token: str
    ) -> Tokens:
        """Refresh-token grant."""
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        return await self._token(server_url, client_id, client_secret, form)

    # -- subscriptions ---------------------------------------------------------------------------

    async def create_subscription(
        self, server_url: str, access_token: str, *, address: str, verification_token: str, expires_in: int
    ) -> Subscription:
        """A WebHook subscription to inbound SMS; RingCentral handshakes with ``address`` meanwhile."""
        payload = {
            "eventFilters": [SMS_EVENT_FILTER],
            "deliveryMode": {
                "transportType": "WebHook",
                "address": address,
                "verificationToken": verification_token,
            },
            "expiresIn": expires_in,
        }
        data = await self._call(
            "POST", server_url, "/restapi/v1.0/subscription", json=payload, headers=_bearer(access_token)
        )
        return _subscription(data)

    async def get_subscription(
        self, server_url: str, access_token: str, subscription_id: str
    ) -> Subscription:
        """The subscription as RingCentral sees it now."""
        path = f"/restapi/v1.0/subscription/{subscription_id}"
        return _subscription(await self._call("GET", server_url, path, headers=_bearer(access_token)))

    async def renew_subscription(
        self, server_url: str, access_token: str, subscription_id: str
    ) -> Subscription:
        """Extend the subscription by its ``expiresIn``."""
        path = f"/restapi/v1.0/subscription/{subscription_id}/renew"
        return _subscription(await self._call("POST", server_url, path, headers=_bearer(access_token)))

    async def delete_subscription(self, server_url: str, access_token: str, subscription_id: str) -> None:
        """Delete it (a 404 counts as done)."""
        path = f"/restapi/v1.0/subscription/{subscription_id}"
        try:
            await self._call("DELETE", server_url, path, headers=_bearer(access_token))
        except RingCentralError as exc:
            if exc.status != 404:
                raise

    # -- message store -------------------------------------------------------------------------

    async def inbound_sms_since(
        self, server_url: str, access_token: str, date_from: datetime, *, per_page: int = 100
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Every inbound SMS created at or after ``date_from``, page by page, as (message id, record with
        its ids as strings). Records without a usable id are skipped; after ``max_pages`` pages that
        still promise more, :class:`PagingLimitReached`."""
        for page in range(1, self._max_pages + 1):
            params: dict[str, str | int] = {
                "messageType": "SMS",
                "direction": "Inbound",
                "dateFrom": format_timestamp(date_from),
                "perPage": per_page,
                "page": page,
            }
            data = await self._call(
                "GET",
                server_url,
                "/restapi/v1.0/account/~/extension/~/message-store",
                params=params,
                headers=_bearer(access_token),
            )
            records = data.get("records", []) if isinstance(data, dict) else None
            navigation = data.get("navigation") if isinstance(data, dict) else None
            if not isinstance(records, list) or not isinstance(navigation, dict | None):
                raise _unexpected("message list", 200)
            for record in records:
                rc_id = message_id_of(record)
                if rc_id is not None:
                    yield rc_id, normalised_record(record, rc_id)
            if not (navigation or {}).get("nextPage"):
                return
        raise PagingLimitReached(
            f"the message store still had more pages after {self._max_pages}", status=200
        )


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
