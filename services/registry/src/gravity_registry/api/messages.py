"""Messages (tenant): ``/v1/sms/messages`` and ``/v1/sms/messages/{messageId}``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import Field

from gravity_events.ids import MESSAGE_ID_RE, TENANT_ID_RE
from gravity_registry import handlers
from gravity_registry.api import deps
from gravity_registry.api.deps import TenantCaller
from gravity_registry.api.schema import Out, Timestamp, errors
from gravity_registry.errors import json_response

__all__ = ["Message", "MessageList", "router"]

router = APIRouter()

_NO_MESSAGE = "no such message"


class Message(Out):
    """The contract's message object."""

    message_id: str = Field(pattern=MESSAGE_ID_RE.pattern, examples=["msg_a1b2c3d4e5f6"])
    direction: Literal["inbound", "outbound"]
    from_: str = Field(alias="from", description="E.164", examples=["+15559876543"])
    to: str = Field(description="E.164", examples=["+15551234567"])
    body: str = Field(examples=["Yes, I confirm"])
    status: Literal["received"]
    rc_message_id: str = Field(description="RingCentral's message id", examples=["123456789"])
    tenant_id: str = Field(pattern=TENANT_ID_RE.pattern, examples=["tenant_abc123def456abcd"])
    timestamp: Timestamp = Field(description="RingCentral's creationTime")
    received_at: Timestamp = Field(description="when the gateway accepted it")


class MessageList(Out):
    """A page of messages; ``nextCursor`` fetches the next page (null on the last)."""

    messages: list[Message]
    next_cursor: str | None


@router.get("/v1/sms/messages", response_model=MessageList, responses=errors(401, 404, 422, 503))
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
    page = await handlers.list_messages(
        deps.pool(request),
        tenant_id=caller.tenant_id,
        direction=direction,
        limit=limit,
        cursor=cursor,
        from_number=from_,
        to_number=to,
        since=since,
        until=until,
        after=after,
    )
    return json_response(page)


@router.get(
    "/v1/sms/messages/{message_id}",
    response_model=Message,
    responses=errors(401, 404, 422, 503, not_found=_NO_MESSAGE),
)
async def get_message(request: Request, message_id: str, caller: TenantCaller) -> Response:
    """One of the tenant's messages."""
    message = await handlers.get_message(
        deps.pool(request), tenant_id=caller.tenant_id, message_id=message_id
    )
    return json_response(message)
