"""Tenants (admin) and API keys (tenant): ``/v1/tenants``, ``/v1/api-keys``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import Field

from gravity_events.ids import KEY_ID_RE, TENANT_ID_RE
from gravity_registry import handlers
from gravity_registry.api import deps
from gravity_registry.api.deps import Admin, TenantCaller
from gravity_registry.api.schema import In, Out, Timestamp, errors
from gravity_registry.errors import json_response

__all__ = [
    "ApiKey",
    "ApiKeyCreated",
    "ApiKeyIn",
    "ApiKeyList",
    "ApiKeyOwner",
    "Tenant",
    "TenantCreated",
    "TenantIn",
    "router",
]

router = APIRouter()

_API_KEY = Field(
    description="the secret, shown this once; send it as Authorization: Bearer <apiKey>",
    examples=["gsk_3q2-7wX9yZbQe1vUo0cJpL4mKfN8sDhA6tRgYiEwBnM"],
)


class TenantIn(In):
    """``POST /v1/tenants``."""

    name: str = Field(min_length=1, max_length=200, examples=["Acme"])


class ApiKeyIn(In):
    """``POST /v1/api-keys``."""

    name: str = Field(min_length=1, max_length=200, examples=["ci"])


class Tenant(Out):
    """A tenant as listed."""

    tenant_id: str = Field(pattern=TENANT_ID_RE.pattern, examples=["tenant_abc123def456abcd"])
    name: str = Field(examples=["Acme"])
    created_at: Timestamp


class TenantCreated(Tenant):
    """A new tenant with its first API key."""

    api_key: str = _API_KEY


class TenantList(Out):
    """``GET /v1/tenants``: a page of tenants, oldest first; ``nextCursor`` fetches the next page (null on
    the last)."""

    tenants: list[Tenant]
    next_cursor: str | None


class ApiKey(Out):
    """An API key as listed: never the secret."""

    key_id: str = Field(pattern=KEY_ID_RE.pattern, examples=["key_0123456789abcdef"])
    name: str = Field(examples=["ci"])
    created_at: Timestamp
    last_used_at: Timestamp | None = Field(description="to the minute; null until first used")


class ApiKeyCreated(Out):
    """A new API key, its secret shown this once."""

    key_id: str = Field(pattern=KEY_ID_RE.pattern, examples=["key_0123456789abcdef"])
    name: str = Field(examples=["ci"])
    api_key: str = _API_KEY
    created_at: Timestamp


class ApiKeyOwner(Out):
    """``GET /v1/api-keys/me``: the key the call was made with, and its tenant."""

    key_id: str = Field(pattern=KEY_ID_RE.pattern, examples=["key_0123456789abcdef"])
    tenant_id: str = Field(pattern=TENANT_ID_RE.pattern, examples=["tenant_abc123def456abcd"])


class ApiKeyList(Out):
    """``GET /v1/api-keys``: a page of the tenant's keys, oldest first; ``nextCursor`` fetches the next page
    (null on the last)."""

    api_keys: list[ApiKey]
    next_cursor: str | None


Limit = Annotated[int, Query(ge=1, le=100, description="items per page")]
Cursor = Annotated[str | None, Query(max_length=200, description="nextCursor of the previous page")]


_ADMIN = "the admin token is required: Authorization: Bearer <GRAVITY_ADMIN_TOKEN>"


@router.post(
    "/v1/tenants",
    status_code=201,
    dependencies=[Admin],
    response_model=TenantCreated,
    responses=errors(400, 401, 413, 422, 503, unauthorized=_ADMIN),
)
async def create_tenant(request: Request, body: TenantIn) -> Response:
    """A tenant and its first API key, shown this once."""
    created = await handlers.create_tenant(deps.pool(request), name=body.name)
    deps.changed(request)
    return json_response(created, 201)


@router.get(
    "/v1/tenants",
    dependencies=[Admin],
    response_model=TenantList,
    responses=errors(401, 422, 503, unauthorized=_ADMIN),
)
async def list_tenants(request: Request, limit: Limit = 100, cursor: Cursor = None) -> Response:
    """Tenants oldest first, ``limit`` (1 to 100, default 100) per page."""
    return json_response(await handlers.list_tenants(deps.pool(request), limit=limit, cursor=cursor))


@router.post(
    "/v1/api-keys", status_code=201, response_model=ApiKeyCreated, responses=errors(400, 401, 413, 422, 503)
)
async def create_api_key(request: Request, body: ApiKeyIn, caller: TenantCaller) -> Response:
    """Another key, shown this once."""
    created = await handlers.create_api_key(deps.pool(request), tenant_id=caller.tenant_id, name=body.name)
    deps.changed(request)
    return json_response(created, 201)


@router.get("/v1/api-keys", response_model=ApiKeyList, responses=errors(401, 422, 503))
async def list_api_keys(
    request: Request, caller: TenantCaller, limit: Limit = 100, cursor: Cursor = None
) -> Response:
    """The tenant's keys oldest first, ``limit`` (1 to 100, default 100) per page, never their secrets."""
    page = await handlers.list_api_keys(
        deps.pool(request), tenant_id=caller.tenant_id, limit=limit, cursor=cursor
    )
    return json_response(page)


@router.get("/v1/api-keys/me", response_model=ApiKeyOwner, responses=errors(401, 503))
async def api_key_owner(caller: TenantCaller) -> Response:
    """Which key and tenant the presented API key is: realtime asks this about a key it has not yet read
    from the change stream, so a key works on the WebSocket as soon as the API returned it."""
    return json_response({"keyId": caller.key_id, "tenantId": caller.tenant_id})


@router.delete(
    "/v1/api-keys/{key_id}",
    status_code=204,
    responses=errors(401, 404, 422, 503, not_found="no such API key"),
)
async def delete_api_key(request: Request, key_id: str, caller: TenantCaller) -> Response:
    """Revoke a key: refused everywhere within seconds, its WebSockets closed."""
    await handlers.revoke_api_key(deps.pool(request), tenant_id=caller.tenant_id, key_id=key_id)
    deps.changed(request)
    return Response(status_code=204)
