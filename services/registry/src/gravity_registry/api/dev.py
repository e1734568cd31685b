"""Development helpers (admin, ``GRAVITY_ENV=development`` only): subscription records without RingCentral,
for local testing and the README. In production these routes answer 404."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ConfigDict, Field

from gravity_events.ids import TENANT_ID_RE
from gravity_registry import handlers
from gravity_registry.api import deps
from gravity_registry.api.deps import Admin, DevOnly
from gravity_registry.api.schema import In, Out, errors
from gravity_registry.errors import json_response

__all__ = ["DevSubscription", "DevSubscriptionIn", "router"]

router = APIRouter()

_ADMIN = "the admin token is required: Authorization: Bearer <GRAVITY_ADMIN_TOKEN>"


class DevSubscriptionIn(In):
    """``POST /v1/dev/subscriptions`` (development only)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    tenant_id: str = Field(alias="tenantId", pattern=r"^tenant_[0-9a-f]{16}$")
    subscription_id: str | None = Field(None, alias="subscriptionId", min_length=1, max_length=200)
    verification_token: str | None = Field(None, alias="verificationToken", min_length=32, max_length=200)


class DevSubscription(Out):
    """The recorded subscription and the token ingest now accepts for it."""

    subscription_id: str = Field(examples=["dev-0123456789abcdef"])
    tenant_id: str = Field(pattern=TENANT_ID_RE.pattern, examples=["tenant_abc123def456abcd"])
    verification_token: str = Field(description="send it as the Verification-Token header")


@router.post(
    "/v1/dev/subscriptions",
    status_code=201,
    dependencies=[DevOnly, Admin],
    response_model=DevSubscription,
    responses=errors(400, 401, 404, 413, 422, 503, unauthorized=_ADMIN, not_found="no such tenant"),
)
async def create_dev_subscription(request: Request, body: DevSubscriptionIn) -> Response:
    """A RingCentral subscription record without RingCentral, for local testing and the README."""
    subscription_id = body.subscription_id or "dev-" + secrets.token_hex(8)
    token = body.verification_token or secrets.token_urlsafe(32)
    await handlers.put_subscription(
        deps.pool(request), tenant_id=body.tenant_id, subscription_id=subscription_id, token=token
    )
    deps.changed(request)
    out: dict[str, Any] = {
        "subscriptionId": subscription_id,
        "tenantId": body.tenant_id,
        "verificationToken": token,
    }
    return json_response(out, 201)


@router.delete(
    "/v1/dev/subscriptions/{subscription_id}",
    status_code=204,
    dependencies=[DevOnly, Admin],
    responses=errors(401, 404, 422, 503, unauthorized=_ADMIN, not_found="no such subscription"),
)
async def delete_dev_subscription(request: Request, subscription_id: str) -> Response:
    """Forget a development subscription."""
    await handlers.remove_subscription(deps.pool(request), subscription_id=subscription_id)
    deps.changed(request)
    return Response(status_code=204)
