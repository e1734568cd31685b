"""The RingCentral platform calls the registry makes, over httpx, with RingCentral's field names.

Every non-2xx answer and every transport failure becomes :class:`RingCentralError` carrying the HTTP
status (None when RingCentral could not be reached), RingCentral's error body, and ``Retry-After`` in
seconds when it sent one (429 and 503). Nothing here logs a secret: tokens travel only in headers and
form bodies, never in messages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx

from gravity_events.ids import format_timestamp, parse_timestamp, utcnow

__all__ = [
    "JWT_GRANT",
    "SMS_EVENT_FILTER",
    "RingCentralClient",
    "RingCentralError",
    "Subscription",
    "Tokens",
]

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SMS_EVENT_FILTER = "/restapi/v1.0/account/~/extension/~/message-store/instant?type=SMS"


class RingCentralError(Exception):
    """A RingCentral call failed; ``status`` is None when the platform could not be reached."""

    def __init__(
        self, message: str, *, status: int | None, body: Any = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.retry_after = retry_after

    @property
    def code(self) -> str | None:
        """RingCentral's ``errorCode`` (or OAuth ``error``), if it sent one."""
        if isinstance(self.body, dict):
            value = self.body.get("errorCode") or self.body.get("error")
            return str(value) if value is not None else None
        return None

    def details(self) -> dict[str, Any]:
        """What the API shows a tenant: status and RingCentral's own error body."""
        return {"ringcentralStatus": self.status, "ringcentralError": self.body}


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


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _subscription(data: dict[str, Any]) -> Subscription:
    try:
        return Subscription(
            id=str(data["id"]),
            status=str(data.get("status", "Active")),
            expires_at=parse_timestamp(str(data["expirationTime"])),
        )
    except (KeyError, ValueError) as exc:
        raise RingCentralError("unexpected subscription resource", status=200, body=data) from exc


class RingCentralClient:
    """One client per registry process; every call names the tenant's ``server_url``."""

    def __init__(self, *, timeout: float = 10.0, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._http = httpx.AsyncClient(timeout=timeout, follow_redirects=False, transport=transport)

    async def aclose(self) -> None:
        """Close pooled connections."""
        await self._http.aclose()

    async def _call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, url, **kwargs)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise RingCentralError(
                f"RingCentral could not be reached: {type(exc).__name__}", status=None
            ) from exc
        if response.is_success:
            return response
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text[:1000]
        raise RingCentralError(
            f"RingCentral answered {response.status_code}",
            status=response.status_code,
            body=body,
            retry_after=_retry_after(response),
        )

    # -- OAuth ---------------------------------------------------------------------------------

    async def _token(
        self, server_url: str, client_id: str, client_secret: str, form: dict[str, str]
    ) -> Tokens:
        response = await self._call(
            "POST",
            f"{server_url}/restapi/oauth/token",
            data=form,
            auth=httpx.BasicAuth(client_id, client_secret),
            headers={"Accept": "application/json"},
        )
        data = response.json()
        now = utcnow()
        try:
            refresh_ttl = data.get("refresh_token_expires_in")
            return Tokens(
                access_token=str(data["access_token"]),
                access_expires_at=now + timedelta(seconds=int(data.get("expires_in", 3600))),
                refresh_token=str(data["refresh_token"]) if data.get("refresh_token") else None,
                refresh_expires_at=now + timedelta(seconds=int(refresh_ttl)) if refresh_ttl else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RingCentralError("unexpected token response", status=response.status_code) from exc

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
        response = await self._call(
            "POST", f"{server_url}/restapi/v1.0/subscription", json=payload, headers=_bearer(access_token)
        )
        return _subscription(response.json())

    async def get_subscription(
        self, server_url: str, access_token: str, subscription_id: str
    ) -> Subscription:
        """The subscription as RingCentral sees it now."""
        url = f"{server_url}/restapi/v1.0/subscription/{subscription_id}"
        return _subscription((await self._call("GET", url, headers=_bearer(access_token))).json())

    async def renew_subscription(
        self, server_url: str, access_token: str, subscription_id: str
    ) -> Subscription:
        """Extend the subscription by its ``expiresIn``."""
        url = f"{server_url}/restapi/v1.0/subscription/{subscription_id}/renew"
        return _subscription((await self._call("POST", url, headers=_bearer(access_token))).json())

    async def delete_subscription(self, server_url: str, access_token: str, subscription_id: str) -> None:
        """Delete it (a 404 counts as done)."""
        url = f"{server_url}/restapi/v1.0/subscription/{subscription_id}"
        try:
            await self._call("DELETE", url, headers=_bearer(access_token))
        except RingCentralError as exc:
            if exc.status != 404:
                raise

    # -- message store -------------------------------------------------------------------------

    async def inbound_sms_since(
        self, server_url: str, access_token: str, date_from: datetime, *, per_page: int = 100
    ) -> AsyncIterator[dict[str, Any]]:
        """Every inbound SMS created at or after ``date_from``, page by page."""
        page = 1
        while True:
            params: dict[str, str | int] = {
                "messageType": "SMS",
                "direction": "Inbound",
                "dateFrom": format_timestamp(date_from),
                "perPage": per_page,
                "page": page,
            }
            response = await self._call(
                "GET",
                f"{server_url}/restapi/v1.0/account/~/extension/~/message-store",
                params=params,
                headers=_bearer(access_token),
            )
            data = response.json()
            for record in data.get("records", []):
                yield record
            if not data.get("navigation", {}).get("nextPage"):
                return
            page += 1


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}
