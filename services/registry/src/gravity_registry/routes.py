"""The registry's HTTP API (contract: Registry API). Thin: auth, parse, call handlers, shape output."""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
import httpx
import orjson
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from gravity_events.ids import format_timestamp
from gravity_registry import db, handlers
from gravity_registry.connections import ConnectionKeeper
from gravity_registry.errors import NotFound, Unauthorized, ValidationFailed, json_response
from gravity_registry.handlers import Caller
from gravity_registry.settings import Settings
from gravity_webhooks import SecretBox

__all__ = ["router"]

router = APIRouter()


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class TenantIn(_Body):
    """``POST /v1/tenants``."""

    name: str = Field(min_length=1, max_length=200)


class ApiKeyIn(_Body):
    """``POST /v1/api-keys``."""

    name: str = Field(min_length=1, max_length=200)


class AppIn(_Body):
    """``POST /v1/apps``."""

    name: str = Field(min_length=1, max_length=200)
    webhook_url: str | None = Field(None, alias="webhookUrl", max_length=2000)

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, populate_by_name=True)


class AppChange(_Body):
    """``PUT /v1/apps/{appId}``: any of the fields; ``"webhookUrl": null`` removes the URL."""

    name: str | None = Field(None, min_length=1, max_length=200)
    webhook_url: str | None = Field(None, alias="webhookUrl", max_length=2000)
    disabled: bool | None = None

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, populate_by_name=True)


class ConnectionIn(_Body):
    """``PUT /v1/ringcentral/connection``."""

    server_url: str = Field(alias="serverUrl", min_length=1, max_length=2000)
    client_id: str = Field(alias="clientId", min_length=1, max_length=500)
    client_secret: str = Field(alias="clientSecret", min_length=1, max_length=500)
    jwt: str = Field(min_length=1, max_length=10_000)

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, populate_by_name=True)

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


class DevSubscriptionIn(_Body):
    """``POST /v1/dev/subscriptions`` (development only)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    tenant_id: str = Field(alias="tenantId", pattern=r"^tenant_[0-9a-f]{16}$")
    subscription_id: str | None = Field(None, alias="subscriptionId", min_length=1, max_length=200)
    verification_token: str | None = Field(None, alias="verificationToken", min_length=32, max_length=200)


def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _box(request: Request) -> SecretBox:
    box: SecretBox = request.app.state.secret_box
    return box


def _keeper(request: Request) -> ConnectionKeeper:
    keeper: ConnectionKeeper = request.app.state.keeper
    return keeper


def _changed(request: Request) -> None:
    request.app.state.outbox.wake()


async def require_admin(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    """``Authorization: Bearer <GRAVITY_ADMIN_TOKEN>``, compared in constant time."""
    expected = request.app.state.settings.admin_token.get_secret_value()
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise Unauthorized("the admin token is required: Authorization: Bearer <GRAVITY_ADMIN_TOKEN>")


async def require_tenant(request: Request, authorization: Annotated[str | None, Header()] = None) -> Caller:
    """The tenant of the presented API key."""
    return await handlers.authenticate(_pool(request), authorization)


Admin = Depends(require_admin)
TenantCaller = Annotated[Caller, Depends(require_tenant)]


# -- tenants (admin) ---------------------------------------------------------------------------------


@router.post("/v1/tenants", status_code=201, dependencies=[Admin])
async def create_tenant(request: Request, body: TenantIn) -> Response:
    """A tenant and its first API key, shown this once."""
    created = await handlers.create_tenant(_pool(request), name=body.name)
    _changed(request)
    return json_response(created, 201)


@router.get("/v1/tenants", dependencies=[Admin])
async def list_tenants(request: Request) -> Response:
    """Every tenant."""
    async with _pool(request).acquire() as conn:
        rows = await db.list_tenants(conn)
    return json_response(
        {
            "tenants": [
                {
                    "tenantId": r["tenant_id"],
                    "name": r["name"],
                    "createdAt": format_timestamp(r["created_at"]),
                }
                for r in rows
            ]
        }
    )


# -- API keys (tenant) -------------------------------------------------------------------------------


@router.post("/v1/api-keys", status_code=201)
async def create_api_key(request: Request, body: ApiKeyIn, caller: TenantCaller) -> Response:
    """Another key, shown this once."""
    created = await handlers.create_api_key(_pool(request), tenant_id=caller.tenant_id, name=body.name)
    _changed(request)
    return json_response(created, 201)


@router.get("/v1/api-keys")
async def list_api_keys(request: Request, caller: TenantCaller) -> Response:
    """The tenant's keys, never their secrets."""
    async with _pool(request).acquire() as conn:
        rows = await db.list_api_keys(conn, tenant_id=caller.tenant_id)
    return json_response(
        {
            "apiKeys": [
                {
                    "keyId": r["key_id"],
                    "name": r["name"],
                    "createdAt": format_timestamp(r["created_at"]),
                    "lastUsedAt": format_timestamp(r["last_used_at"]) if r["last_used_at"] else None,
                }
                for r in rows
            ]
        }
    )


@router.delete("/v1/api-keys/{key_id}", status_code=204)
async def delete_api_key(request: Request, key_id: str, caller: TenantCaller) -> Response:
    """Revoke a key: refused everywhere within seconds, its WebSockets closed."""
    await handlers.revoke_api_key(_pool(request), tenant_id=caller.tenant_id, key_id=key_id)
    _changed(request)
    return Response(status_code=204)


# -- apps (tenant) ----------------------------------------------------------------------------------


@router.post("/v1/apps", status_code=201)
async def create_app(request: Request, body: AppIn, caller: TenantCaller) -> Response:
    """An app and its signing secret, shown this once."""
    url = await handlers.checked_webhook_url(body.webhook_url, production=_settings(request).production)
    created = await handlers.create_app(
        _pool(request), _box(request), tenant_id=caller.tenant_id, name=body.name, webhook_url=url
    )
    _changed(request)
    return json_response(created, 201)


@router.get("/v1/apps")
async def list_apps(request: Request, caller: TenantCaller) -> Response:
    """The tenant's apps, oldest first."""
    async with _pool(request).acquire() as conn:
        rows = await db.list_apps(conn, tenant_id=caller.tenant_id)
    return json_response({"apps": [handlers.app_json(r) for r in rows]})


@router.get("/v1/apps/{app_id}")
async def get_app(request: Request, app_id: str, caller: TenantCaller) -> Response:
    """One of the tenant's apps."""
    async with _pool(request).acquire() as conn:
        row = await db.get_app(conn, tenant_id=caller.tenant_id, app_id=app_id)
    if row is None:
        raise NotFound("no such app")
    return json_response(handlers.app_json(row))


@router.put("/v1/apps/{app_id}")
async def update_app(request: Request, app_id: str, body: AppChange, caller: TenantCaller) -> Response:
    """Change name, webhookUrl (null removes it) or disabled; fanout learns it within seconds."""
    given = body.model_fields_set
    changes: dict[str, Any] = {}
    if "name" in given:
        if body.name is None:
            raise ValidationFailed(
                "name cannot be null", [{"field": "name", "message": "a string is required"}]
            )
        changes["name"] = body.name
    if "webhook_url" in given:
        production = _settings(request).production
        changes["webhook_url"] = await handlers.checked_webhook_url(body.webhook_url, production=production)
    if "disabled" in given:
        if body.disabled is None:
            raise ValidationFailed(
                "disabled cannot be null", [{"field": "disabled", "message": "true or false"}]
            )
        changes["disabled"] = body.disabled
    updated = await handlers.update_app(_pool(request), tenant_id=caller.tenant_id, app_id=app_id, **changes)
    _changed(request)
    return json_response(updated)


@router.delete("/v1/apps/{app_id}", status_code=204)
async def delete_app(request: Request, app_id: str, caller: TenantCaller) -> Response:
    """Delete the app; deliveries to it stop."""
    await handlers.delete_app(_pool(request), tenant_id=caller.tenant_id, app_id=app_id)
    _changed(request)
    return Response(status_code=204)


@router.post("/v1/apps/{app_id}/rotate-secret")
async def rotate_secret(request: Request, app_id: str, caller: TenantCaller) -> Response:
    """A new signing secret (shown this once); the old one also signs for 24 hours."""
    rotated = await handlers.rotate_secret(
        _pool(request), _box(request), tenant_id=caller.tenant_id, app_id=app_id
    )
    _changed(request)
    return json_response(rotated)


@router.post("/v1/apps/{app_id}/test-webhook")
async def test_webhook(request: Request, app_id: str, caller: TenantCaller) -> Response:
    """POST a signed test event to the app's webhookUrl and report the answer."""
    result = await handlers.send_test_webhook(
        _pool(request),
        _box(request),
        request.app.state.delivery_client,
        tenant_id=caller.tenant_id,
        app_id=app_id,
    )
    return json_response(result)


def _encode_delivery_cursor(row: Any) -> str:
    raw = orjson.dumps([row["attempted_at"].isoformat(), row["message_id"], row["attempt"]])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_delivery_cursor(cursor: str) -> tuple[datetime, str, int]:
    try:
        moment, message_id, attempt = orjson.loads(
            base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        )
        at = datetime.fromisoformat(moment)
        if at.tzinfo is None or not isinstance(message_id, str) or not isinstance(attempt, int):
            raise ValueError("bad cursor")
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError) as exc:
        raise ValidationFailed(
            "cursor is not valid", [{"field": "cursor", "message": "use nextCursor as returned"}]
        ) from exc
    return at, message_id, attempt


@router.get("/v1/apps/{app_id}/deliveries")
async def list_deliveries(
    request: Request,
    app_id: str,
    caller: TenantCaller,
    message_id: Annotated[str | None, Query(alias="messageId", max_length=64)] = None,
    status: Literal["succeeded", "failed"] | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
) -> Response:
    """The app's delivery attempts, newest first, filtered by messageId and/or status."""
    before = _decode_delivery_cursor(cursor) if cursor else None
    async with _pool(request).acquire() as conn:
        if await db.get_app(conn, tenant_id=caller.tenant_id, app_id=app_id) is None:
            raise NotFound("no such app")
        rows = await db.list_deliveries(
            conn,
            app_id=app_id,
            message_id=message_id,
            succeeded=None if status is None else status == "succeeded",
            before=before,
            limit=limit + 1,
        )
    page, more = rows[:limit], len(rows) > limit
    return json_response(
        {
            "deliveries": [handlers.delivery_json(r) for r in page],
            "nextCursor": _encode_delivery_cursor(page[-1]) if more else None,
        }
    )


@router.post("/v1/apps/{app_id}/deliveries/{message_id}/retry", status_code=202)
async def retry_delivery(request: Request, app_id: str, message_id: str, caller: TenantCaller) -> Response:
    """Send one stored message to the app again, now (fanout records the attempt)."""
    queued = await handlers.request_delivery(
        _pool(request), tenant_id=caller.tenant_id, app_id=app_id, message_id=message_id
    )
    _changed(request)
    return json_response(queued, 202)


# -- RingCentral connection (tenant) ---------------------------------------------------------------


@router.put("/v1/ringcentral/connection")
async def put_connection(request: Request, body: ConnectionIn, caller: TenantCaller) -> Response:
    """Connect (or reconnect) the tenant's RingCentral account."""
    if _settings(request).production and not body.server_url.startswith("https://"):
        raise ValidationFailed(
            "serverUrl must use https", [{"field": "serverUrl", "message": "https only in production"}]
        )
    connected = await _keeper(request).connect(
        tenant_id=caller.tenant_id,
        server_url=body.server_url,
        client_id=body.client_id,
        client_secret=body.client_secret,
        jwt=body.jwt,
    )
    return json_response(connected)


@router.get("/v1/ringcentral/connection")
async def get_connection(request: Request, caller: TenantCaller) -> Response:
    """The connection and its current status."""
    return json_response(await _keeper(request).get(tenant_id=caller.tenant_id))


@router.delete("/v1/ringcentral/connection", status_code=204)
async def delete_connection(request: Request, caller: TenantCaller) -> Response:
    """Disconnect: the subscription is deleted at RingCentral and its events refused."""
    await _keeper(request).disconnect(tenant_id=caller.tenant_id)
    return Response(status_code=204)


# -- messages (tenant) -------------------------------------------------------------------------------


def _encode_cursor(received_at: datetime, message_id: str) -> str:
    raw = orjson.dumps([received_at.isoformat(), message_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        received_at, message_id = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        moment = datetime.fromisoformat(received_at)
        if moment.tzinfo is None or not isinstance(message_id, str):
            raise ValueError("bad cursor")
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError) as exc:
        raise ValidationFailed(
            "cursor is not valid", [{"field": "cursor", "message": "use nextCursor as returned"}]
        ) from exc
    return moment, message_id


def _aware(value: datetime | None, field: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValidationFailed(
            f"{field} needs a UTC offset", [{"field": field, "message": "e.g. 2026-03-01T14:30:00.000Z"}]
        )
    return value


@router.get("/v1/sms/messages")
async def list_messages(
    request: Request,
    caller: TenantCaller,
    direction: Literal["inbound", "outbound"] | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
    from_: Annotated[str | None, Query(alias="from", max_length=32)] = None,
    to: Annotated[str | None, Query(max_length=32)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """Newest first by (receivedAt, messageId); ``after=<messageId>`` pages oldest first instead."""
    pool = _pool(request)
    async with pool.acquire() as conn:
        if after is not None:
            position = await db.message_position(conn, tenant_id=caller.tenant_id, message_id=after)
            if position is None:
                raise NotFound("no such message")
            start = _decode_cursor(cursor) if cursor else position
            rows = await db.list_messages_after(
                conn, tenant_id=caller.tenant_id, after=start, limit=limit + 1
            )
        else:
            rows = await db.list_messages_before(
                conn,
                tenant_id=caller.tenant_id,
                direction=direction,
                before=_decode_cursor(cursor) if cursor else None,
                from_number=from_,
                to_number=to,
                since=_aware(since, "since"),
                until=_aware(until, "until"),
                limit=limit + 1,
            )
    page, more = rows[:limit], len(rows) > limit
    next_cursor = _encode_cursor(page[-1]["received_at"], page[-1]["message_id"]) if more else None
    return json_response({"messages": [handlers.message_json(r) for r in page], "nextCursor": next_cursor})


@router.get("/v1/sms/messages/{message_id}")
async def get_message(request: Request, message_id: str, caller: TenantCaller) -> Response:
    """One of the tenant's messages."""
    async with _pool(request).acquire() as conn:
        row = await db.get_message(conn, tenant_id=caller.tenant_id, message_id=message_id)
    if row is None:
        raise NotFound("no such message")
    return json_response(handlers.message_json(row))


# -- development helpers (admin, GRAVITY_ENV=development only) -----------------------------------------


def _development_only(request: Request) -> None:
    if request.app.state.settings.env != "development":
        raise NotFound("not found")


DevOnly = Depends(_development_only)


@router.post("/v1/dev/subscriptions", status_code=201, dependencies=[DevOnly, Admin])
async def create_dev_subscription(request: Request, body: DevSubscriptionIn) -> Response:
    """A RingCentral subscription record without RingCentral, for local testing and the README."""
    subscription_id = body.subscription_id or "dev-" + secrets.token_hex(8)
    token = body.verification_token or secrets.token_urlsafe(32)
    await handlers.put_subscription(
        _pool(request), tenant_id=body.tenant_id, subscription_id=subscription_id, token=token
    )
    _changed(request)
    out: dict[str, Any] = {
        "subscriptionId": subscription_id,
        "tenantId": body.tenant_id,
        "verificationToken": token,
    }
    return json_response(out, 201)


@router.delete("/v1/dev/subscriptions/{subscription_id}", status_code=204, dependencies=[DevOnly, Admin])
async def delete_dev_subscription(request: Request, subscription_id: str) -> Response:
    """Forget a development subscription."""
    await handlers.remove_subscription(_pool(request), subscription_id=subscription_id)
    _changed(request)
    return Response(status_code=204)


# -- health ------------------------------------------------------------------------------------------


@router.get("/healthz", include_in_schema=False)
async def healthz() -> Response:
    """The process is up."""
    return json_response({"status": "ok"})


@router.get("/readyz", include_in_schema=False)
async def readyz(request: Request) -> Response:
    """Database reachable; projection and delivery log caught up with what was on their topics at start."""
    state = request.app.state
    checks: dict[str, str] = {}
    try:
        async with state.pool.acquire(timeout=2) as conn:
            await conn.fetchval("SELECT 1")
        checks["database"] = "ok"
    except (OSError, asyncpg.PostgresError, TimeoutError):
        checks["database"] = "unreachable"
    checks["projection"] = "ok" if state.projection.caught_up.is_set() else "catching up"
    checks["deliveries"] = "ok" if state.delivery_log.caught_up.is_set() else "catching up"
    if all(v == "ok" for v in checks.values()):
        return json_response({"status": "ok"})
    return json_response({"status": "unavailable", "checks": checks}, 503)
