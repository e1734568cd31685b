"""The RingCentral notification as it arrives at the gateway, and what a message is made of.

Field names follow RingCentral's instant message-store notification exactly (see the contract).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gravity_events.ids import parse_timestamp

__all__ = [
    "MAX_ID_LENGTH",
    "InboundSms",
    "NotificationError",
    "check_notification_shape",
    "extract_inbound_sms",
    "is_inbound_sms_event",
    "is_renewal_reminder",
]

_INSTANT_SMS_EVENT = re.compile(
    r"^/restapi/v1\.0/account/[^/?]+/extension/[^/?]+/message-store/instant\?(?:.*&)?type=SMS(?:&.*)?$"
)
_RENEWAL_REMINDER_EVENT = re.compile(r"^/restapi/v1\.0/subscription/~(?:\?.*)?$")


class NotificationError(ValueError):
    """The JSON is not a RingCentral notification, or not a usable inbound SMS."""


def check_notification_shape(data: Any) -> tuple[str, str, dict[str, Any]]:
    """Return (subscriptionId, event, body) or raise :class:`NotificationError`."""
    if not isinstance(data, dict):
        raise NotificationError("the body is not a JSON object")
    subscription_id, event, body = data.get("subscriptionId"), data.get("event"), data.get("body")
    if not isinstance(subscription_id, str) or not subscription_id:
        raise NotificationError("subscriptionId is missing or not a string")
    if not isinstance(event, str) or not event:
        raise NotificationError("event is missing or not a string")
    if not isinstance(body, dict):
        raise NotificationError("body is missing or not an object")
    return subscription_id, event, body


def is_inbound_sms_event(event: str, body: dict[str, Any]) -> bool:
    """True for an instant message-store notification of an inbound SMS."""
    return (
        _INSTANT_SMS_EVENT.match(event) is not None
        and body.get("type", "SMS") == "SMS"
        and body.get("direction", "Inbound") == "Inbound"
    )


def is_renewal_reminder(event: str) -> bool:
    """True for RingCentral's subscription renewal reminder (``/restapi/v1.0/subscription/~``)."""
    return _RENEWAL_REMINDER_EVENT.match(event) is not None


@dataclass(frozen=True, slots=True)
class InboundSms:
    """What the gateway stores of one inbound SMS."""

    rc_message_id: str
    from_number: str
    to_number: str
    text: str
    creation_time: datetime
    conversation_id: str | None


def _str(value: Any, what: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value:
        raise NotificationError(f"{what} is missing or not a string")
    return value


MAX_ID_LENGTH = 128
"""RingCentral message ids are short digit strings; anything longer, or with control characters (a NUL
cannot even be stored), is not one."""


def extract_inbound_sms(body: dict[str, Any]) -> InboundSms:
    """Read one inbound SMS out of a notification ``body``; raise :class:`NotificationError`.

    ``to`` is the ``to[]`` entry with ``target: true``, else the first; the text is ``subject``
    (absent means an empty message); the conversation id may be ``conversationId`` or
    ``conversation.id``.
    """
    rc_message_id = _str(body.get("id"), "body.id")
    if len(rc_message_id) > MAX_ID_LENGTH or any(ch < " " or ch == "\x7f" for ch in rc_message_id):
        raise NotificationError("body.id is not a RingCentral message id")
    sender = body.get("from")
    if not isinstance(sender, dict):
        raise NotificationError("body.from is missing or not an object")
    from_number = _str(sender.get("phoneNumber"), "body.from.phoneNumber")
    recipients = body.get("to")
    if not isinstance(recipients, list) or not recipients:
        raise NotificationError("body.to is missing or empty")
    if not all(isinstance(r, dict) for r in recipients):
        raise NotificationError("body.to entries must be objects")
    target = next((r for r in recipients if r.get("target") is True), recipients[0])
    to_number = _str(target.get("phoneNumber"), "body.to[].phoneNumber")
    text = body.get("subject", "")
    if not isinstance(text, str):
        raise NotificationError("body.subject is not a string")
    try:
        creation_time = parse_timestamp(_str(body.get("creationTime"), "body.creationTime"))
    except ValueError as exc:
        raise NotificationError(f"body.creationTime is not a timestamp: {exc}") from exc
    conversation = body.get("conversation")
    conversation_id = body.get("conversationId")
    if conversation_id is None and isinstance(conversation, dict):
        conversation_id = conversation.get("id")
    return InboundSms(
        rc_message_id=rc_message_id,
        from_number=from_number,
        to_number=to_number,
        text=text,
        creation_time=creation_time,
        conversation_id=str(conversation_id) if conversation_id is not None else None,
    )
