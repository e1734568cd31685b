"""The delivery log (tenant): ``/v1/apps/{appId}/deliveries`` and re-sending one message to one app."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import Field

from gravity_events.ids import APP_ID_RE
from gravity_registry import handlers
from gravity_registry.api import deps
from gravity_registry.api.deps import TenantCaller
from gravity_registry.api.schema import Out, Timestamp, errors
from gravity_registry.errors import json_response

__all__ = ["Delivery", "DeliveryList", "DeliveryQueued", "router"]

router = APIRouter()


class Delivery(Out):
    """One delivery attempt of one message to one app."""

    message_id: str = Field(examples=["msg_a1b2c3d4e5f6"])
    app_id: str = Field(pattern=APP_ID_RE.pattern, examples=["app_abc123def456abcd"])
    attempt: int = Field(description="1 for the first attempt, counting up per retry", examples=[1])
    status: Literal["succeeded", "failed"]
    response_code: int | None = Field(description="the endpoint's HTTP status; null if none", examples=[200])
    duration_ms: float = Field(examples=[42.5])
    error: str | None = Field(description="why the attempt failed; null on success", examples=[None])
    attempted_at: Timestamp
    next_attempt_at: Timestamp | None = Field(description="when fanout retries; null if it does not")


class DeliveryList(Out):
    """A page of attempts, newest first; ``nextCursor`` fetches the next page (null on the last)."""

    deliveries: list[Delivery]
    next_cursor: str | None


class DeliveryQueued(Out):
    """A re-send handed to fanout; the attempt shows in the delivery log when it is made."""

    app_id: str = Field(pattern=APP_ID_RE.pattern, examples=["app_abc123def456abcd"])
    message_id: str = Field(examples=["msg_a1b2c3d4e5f6"])
    status: Literal["queued"]
    requested_at: Timestamp


@router.get(
    "/v1/apps/{app_id}/deliveries",
    response_model=DeliveryList,
    responses=errors(401, 404, 422, 503, not_found="no such app"),
)
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
    page = await handlers.list_deliveries(
        deps.pool(request),
        tenant_id=caller.tenant_id,
        app_id=app_id,
        message_id=message_id,
        succeeded=None if status is None else status == "succeeded",
        limit=limit,
        cursor=cursor,
    )
    return json_response(page)


@router.post(
    "/v1/apps/{app_id}/deliveries/{message_id}/retry",
    status_code=202,
    response_model=DeliveryQueued,
    responses=errors(
        401,
        404,
        409,
        422,
        429,
        503,
        not_found="no such message",
        conflict="the app has no webhookUrl to deliver to",
    ),
)
async def retry_delivery(request: Request, app_id: str, message_id: str, caller: TenantCaller) -> Response:
    """Send one stored message to the app again, now (fanout records the attempt). Rate-limited per tenant
    (``GRAVITY_REGISTRY_RESEND_*``): 429 ``rate_limited`` with ``Retry-After``."""
    deps.limit_resend(request, caller)
    queued = await handlers.request_delivery(
        deps.pool(request), tenant_id=caller.tenant_id, app_id=app_id, message_id=message_id
    )
    deps.changed(request)
    return json_response(queued, 202)
