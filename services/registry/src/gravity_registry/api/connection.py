"""The RingCentral connection (tenant): ``/v1/ringcentral/connection``."""

from __future__ import annotations

from typing import Literal

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ConfigDict, Field, field_validator

from gravity_registry.api import deps
from gravity_registry.api.deps import TenantCaller
from gravity_registry.api.schema import In, Out, Timestamp, errors
from gravity_registry.errors import json_response

__all__ = ["Connection", "ConnectionIn", "router"]

router = APIRouter()

_NOT_CONNECTED = "no RingCentral connection"


class ConnectionIn(In):
    """``PUT /v1/ringcentral/connection``."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, populate_by_name=True)

    server_url: str = Field(
        alias="serverUrl",
        min_length=1,
        max_length=2000,
        examples=["https://platform.ringcentral.com"],
        description="RingCentral's platform URL; in production https on one of GRAVITY_RC_ALLOWED_HOSTS",
    )
    client_id: str = Field(alias="clientId", min_length=1, max_length=500)
    client_secret: str = Field(alias="clientSecret", min_length=1, max_length=500)
    jwt: str = Field(min_length=1, max_length=10_000)

    @field_validator("server_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        """An http(s) base URL with a host and nothing else (no credentials, query or fragment)."""
        try:
            url = httpx.URL(value)
        except (httpx.InvalidURL, ValueError, TypeError) as exc:
            raise ValueError("serverUrl is not a valid URL") from exc
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(
                "serverUrl must be an http(s) URL with a host, e.g. https://platform.ringcentral.com"
            )
        if url.userinfo or url.query or url.fragment or any(c.isspace() for c in value):
            raise ValueError("serverUrl must be a base URL without credentials, query or fragment")
        return value.rstrip("/")


class Connection(Out):
    """The tenant's connection (never a secret)."""

    status: Literal["active", "renewing", "blacklisted", "expired", "error"]
    subscription_id: str = Field(examples=["7e4a7486-8df9-4195-8aef-b8d81d3345f6"])
    expires_at: Timestamp
    server_url: str = Field(examples=["https://platform.ringcentral.com"])
    connected_at: Timestamp
    last_error: str | None = Field(description="why the last check failed; null when it did not")


@router.put(
    "/v1/ringcentral/connection",
    response_model=Connection,
    responses=errors(400, 401, 422, 502, 503),
)
async def put_connection(request: Request, body: ConnectionIn, caller: TenantCaller) -> Response:
    """Connect (or reconnect) the tenant's RingCentral account.

    In production ``serverUrl`` must be ``https`` on one of ``GRAVITY_RC_ALLOWED_HOSTS`` (422 otherwise,
    before any connection is attempted); development accepts any http(s) host.
    """
    connected = await deps.connections(request).connect(
        tenant_id=caller.tenant_id,
        server_url=body.server_url,
        client_id=body.client_id,
        client_secret=body.client_secret,
        jwt=body.jwt,
    )
    return json_response(connected)


@router.get(
    "/v1/ringcentral/connection",
    response_model=Connection,
    responses=errors(401, 404, 422, 503, not_found=_NOT_CONNECTED),
)
async def get_connection(request: Request, caller: TenantCaller) -> Response:
    """The connection and its current status."""
    return json_response(await deps.connections(request).get(tenant_id=caller.tenant_id))


@router.delete(
    "/v1/ringcentral/connection",
    status_code=204,
    responses=errors(401, 404, 422, 503, not_found=_NOT_CONNECTED),
)
async def delete_connection(request: Request, caller: TenantCaller) -> Response:
    """Disconnect: the subscription is deleted at RingCentral and its events refused."""
    await deps.connections(request).disconnect(tenant_id=caller.tenant_id)
    return Response(status_code=204)
