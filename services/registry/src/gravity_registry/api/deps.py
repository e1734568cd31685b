"""What routes depend on: the lifespan's resources from ``app.state``, and who is calling."""

from __future__ import annotations

import hmac
from typing import Annotated

import asyncpg
from fastapi import Depends, Header, Request

from gravity_registry import handlers
from gravity_registry.errors import NotFound, Unauthorized, ValidationFailed
from gravity_registry.handlers import Caller, Connections
from gravity_registry.limits import TokenBuckets
from gravity_registry.settings import Settings
from gravity_webhooks import DeliveryClient, SecretBox

__all__ = [
    "Admin",
    "DevOnly",
    "TenantCaller",
    "box",
    "changed",
    "connections",
    "delivery_client",
    "limit_resend",
    "limit_test_webhook",
    "pool",
    "require_admin",
    "require_storable_parameters",
    "require_tenant",
    "settings",
]


def pool(request: Request) -> asyncpg.Pool:
    """The registry's asyncpg pool."""
    value: asyncpg.Pool = request.app.state.pool
    return value


def settings(request: Request) -> Settings:
    """The settings the app was built with."""
    value: Settings = request.app.state.settings
    return value


def box(request: Request) -> SecretBox:
    """Encrypts and decrypts stored secrets."""
    value: SecretBox = request.app.state.secret_box
    return value


def connections(request: Request) -> Connections:
    """RingCentral connect, read and disconnect."""
    value: Connections = request.app.state.connections
    return value


def delivery_client(request: Request) -> DeliveryClient:
    """The webhook client test deliveries go through (the one fanout's deliveries use)."""
    value: DeliveryClient = request.app.state.delivery_client
    return value


def changed(request: Request) -> None:
    """A change was committed with outbox records: publish them now, not at the next sweep."""
    request.app.state.outbox.wake()


def limit_test_webhook(request: Request, caller: Caller) -> None:
    """Spend one of the tenant's test-webhook tokens (429 ``rate_limited`` when there is none)."""
    buckets: TokenBuckets = request.app.state.test_webhook_limit
    buckets.take(caller.tenant_id)


def limit_resend(request: Request, caller: Caller) -> None:
    """Spend one of the tenant's re-send tokens (429 ``rate_limited`` when there is none)."""
    buckets: TokenBuckets = request.app.state.resend_limit
    buckets.take(caller.tenant_id)


def require_storable_parameters(request: Request) -> None:
    """Refuse a path or query value with a NUL character (422 naming it): PostgreSQL text cannot hold one,
    and no id or filter the API knows contains one."""
    problems = [
        {"field": f"{where}.{name}", "message": "must not contain the NUL character (U+0000)"}
        for where, values in (
            ("path", request.path_params.items()),
            ("query", request.query_params.multi_items()),
        )
        for name, value in values
        if isinstance(value, str) and "\x00" in value
    ]
    if problems:
        raise ValidationFailed("the request is not valid", problems)


async def require_admin(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    """``Authorization: Bearer <GRAVITY_ADMIN_TOKEN>``, compared in constant time."""
    expected = request.app.state.settings.admin_token.get_secret_value()
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise Unauthorized("the admin token is required: Authorization: Bearer <GRAVITY_ADMIN_TOKEN>")


async def require_tenant(request: Request, authorization: Annotated[str | None, Header()] = None) -> Caller:
    """The tenant of the presented API key."""
    return await handlers.authenticate(pool(request), authorization)


def _development_only(request: Request) -> None:
    if request.app.state.settings.env != "development":
        raise NotFound("not found")


Admin = Depends(require_admin)
TenantCaller = Annotated[Caller, Depends(require_tenant)]
DevOnly = Depends(_development_only)
