"""Apps (tenant): ``/v1/apps``, ``/v1/apps/{appId}``, its signing secret and test webhook."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ConfigDict, Field

from gravity_events.ids import APP_ID_RE, TENANT_ID_RE
from gravity_registry import handlers
from gravity_registry.api import deps
from gravity_registry.api.deps import TenantCaller
from gravity_registry.api.schema import In, Out, Timestamp, errors
from gravity_registry.errors import ValidationFailed, json_response

__all__ = ["App", "AppChange", "AppCreated", "AppIn", "AppList", "AppRotated", "TestWebhookResult", "router"]

router = APIRouter()

_NO_APP = "no such app"
_SIGNING_SECRET = Field(
    description="whsec_ + base64 of the HMAC key, shown this once",
    examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
)


class AppIn(In):
    """``POST /v1/apps``."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, populate_by_name=True)

    name: str = Field(min_length=1, max_length=200, examples=["CRM"])
    webhook_url: str | None = Field(
        None, alias="webhookUrl", max_length=2000, examples=["https://crm.example.com/hooks/sms"]
    )


class AppChange(In):
    """``PUT /v1/apps/{appId}``: any of the fields; ``"webhookUrl": null`` removes the URL."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, populate_by_name=True)

    name: str | None = Field(None, min_length=1, max_length=200)
    webhook_url: str | None = Field(None, alias="webhookUrl", max_length=2000)
    disabled: bool | None = None


class App(Out):
    """The contract's app object (never a secret)."""

    app_id: str = Field(pattern=APP_ID_RE.pattern, examples=["app_abc123def456abcd"])
    tenant_id: str = Field(pattern=TENANT_ID_RE.pattern, examples=["tenant_abc123def456abcd"])
    name: str = Field(examples=["CRM"])
    webhook_url: str | None = Field(examples=["https://crm.example.com/hooks/sms"])
    disabled: bool = Field(description="true after continuous delivery failures, or when set so")
    created_at: Timestamp
    updated_at: Timestamp


class AppCreated(App):
    """A new app with its signing secret."""

    signing_secret: str = _SIGNING_SECRET


class AppRotated(App):
    """The app with its new signing secret; the previous one also signs until ``previousSecretExpiresAt``."""

    signing_secret: str = _SIGNING_SECRET
    previous_secret_expires_at: Timestamp


class AppList(Out):
    """``GET /v1/apps``: the tenant's apps, oldest first."""

    apps: list[App]


class TestWebhookResult(Out):
    """What the app's endpoint answered to a signed test event."""

    ok: bool = Field(description="true for a 2xx answer")
    status: int | None = Field(description="the HTTP status; null on timeout or connection failure")
    body: str = Field(description="the response body cut to 4 KiB, or why there is none")


@router.post(
    "/v1/apps",
    status_code=201,
    response_model=AppCreated,
    responses=errors(
        400,
        401,
        409,
        413,
        422,
        503,
        conflict="the tenant has 100 apps, the most it may have; delete one first",
    ),
)
async def create_app(request: Request, body: AppIn, caller: TenantCaller) -> Response:
    """An app and its signing secret, shown this once; 409 when the tenant has as many apps as it may
    (``GRAVITY_MAX_APPS_PER_TENANT``, 100 by default)."""
    settings = deps.settings(request)
    url = await handlers.checked_webhook_url(body.webhook_url, production=settings.production)
    created = await handlers.create_app(
        deps.pool(request),
        deps.box(request),
        tenant_id=caller.tenant_id,
        name=body.name,
        webhook_url=url,
        max_apps=settings.max_apps_per_tenant,
    )
    deps.changed(request)
    return json_response(created, 201)


@router.get("/v1/apps", response_model=AppList, responses=errors(401, 422, 503))
async def list_apps(request: Request, caller: TenantCaller) -> Response:
    """The tenant's apps, oldest first: all of them (at most ``GRAVITY_MAX_APPS_PER_TENANT``)."""
    return json_response(await handlers.list_apps(deps.pool(request), tenant_id=caller.tenant_id))


@router.get("/v1/apps/{app_id}", response_model=App, responses=errors(401, 404, 422, 503, not_found=_NO_APP))
async def get_app(request: Request, app_id: str, caller: TenantCaller) -> Response:
    """One of the tenant's apps."""
    return json_response(
        await handlers.get_app(deps.pool(request), tenant_id=caller.tenant_id, app_id=app_id)
    )


@router.put(
    "/v1/apps/{app_id}",
    response_model=App,
    responses=errors(400, 401, 404, 413, 422, 503, not_found=_NO_APP),
)
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
        production = deps.settings(request).production
        changes["webhook_url"] = await handlers.checked_webhook_url(body.webhook_url, production=production)
    if "disabled" in given:
        if body.disabled is None:
            raise ValidationFailed(
                "disabled cannot be null", [{"field": "disabled", "message": "true or false"}]
            )
        changes["disabled"] = body.disabled
    updated = await handlers.update_app(
        deps.pool(request), tenant_id=caller.tenant_id, app_id=app_id, **changes
    )
    deps.changed(request)
    return json_response(updated)


@router.delete("/v1/apps/{app_id}", status_code=204, responses=errors(401, 404, 422, 503, not_found=_NO_APP))
async def delete_app(request: Request, app_id: str, caller: TenantCaller) -> Response:
    """Delete the app; deliveries to it stop."""
    await handlers.delete_app(deps.pool(request), tenant_id=caller.tenant_id, app_id=app_id)
    deps.changed(request)
    return Response(status_code=204)


@router.post(
    "/v1/apps/{app_id}/rotate-secret",
    response_model=AppRotated,
    responses=errors(401, 404, 422, 503, not_found=_NO_APP),
)
async def rotate_secret(request: Request, app_id: str, caller: TenantCaller) -> Response:
    """A new signing secret (shown this once); the old one also signs for 24 hours."""
    rotated = await handlers.rotate_secret(
        deps.pool(request), deps.box(request), tenant_id=caller.tenant_id, app_id=app_id
    )
    deps.changed(request)
    return json_response(rotated)


@router.post(
    "/v1/apps/{app_id}/test-webhook",
    response_model=TestWebhookResult,
    responses=errors(
        401, 404, 409, 422, 429, 503, not_found=_NO_APP, conflict="the app has no webhookUrl to test"
    ),
)
async def test_webhook(request: Request, app_id: str, caller: TenantCaller) -> Response:
    """POST a signed test event to the app's webhookUrl and report the answer. Rate-limited per tenant
    (``GRAVITY_REGISTRY_TEST_WEBHOOK_*``): 429 ``rate_limited`` with ``Retry-After``."""
    deps.limit_test_webhook(request, caller)
    result = await handlers.send_test_webhook(
        deps.pool(request),
        deps.box(request),
        deps.delivery_client(request),
        tenant_id=caller.tenant_id,
        app_id=app_id,
    )
    return json_response(result)
