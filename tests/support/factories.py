"""Contract-shaped test data: RingCentral notifications and the events the services publish about them."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Any

from gravity_events.ids import utcnow
from gravity_events.models import RcNotification, SubscriptionActive, SubscriptionRemoved

__all__ = [
    "SMS_EVENT",
    "notification",
    "raw_event",
    "subscription_active",
    "subscription_removed",
]

SMS_EVENT = "/restapi/v1.0/account/809646016/extension/629893016/message-store/instant?type=SMS"


def notification(subscription_id: str, rc_id: str | None = None, **body: Any) -> dict[str, Any]:
    """The contract's example notification for ``subscription_id``, with a fresh id by default."""
    rc_id = rc_id or str(secrets.randbelow(10**15))
    return {
        "uuid": secrets.token_hex(8),
        "event": SMS_EVENT,
        "timestamp": "2026-03-01T14:30:00.034Z",
        "subscriptionId": subscription_id,
        "ownerId": "629893016",
        "body": {
            "id": rc_id,
            "to": [{"phoneNumber": "+15551234567", "name": "Support", "target": True}],
            "from": {"phoneNumber": "+15559876543", "location": "Mountain View, CA"},
            "type": "SMS",
            "creationTime": "2026-03-01T14:30:00.000Z",
            "lastModifiedTime": "2026-03-01T14:30:00.000Z",
            "readStatus": "Unread",
            "direction": "Inbound",
            "subject": "Yes, I confirm",
            "messageStatus": "Received",
            "conversation": {"id": "1638233798595111162"},
            "eventType": "Create",
            **body,
        },
    }


def subscription_active(tenant_id: str, subscription_id: str, token: str) -> SubscriptionActive:
    """What the registry publishes when a subscription is connected."""
    return SubscriptionActive(
        subscription_id=subscription_id,
        tenant_id=tenant_id,
        verification_token_sha256=hashlib.sha256(token.encode()).hexdigest(),
    )


def subscription_removed(tenant_id: str, subscription_id: str) -> SubscriptionRemoved:
    """What the registry publishes when a subscription is replaced or deleted."""
    return SubscriptionRemoved(subscription_id=subscription_id, tenant_id=tenant_id)


def raw_event(
    tenant_id: str, subscription_id: str, *, received_at: datetime | None = None, **body: Any
) -> RcNotification:
    """What ingest appends for one fresh notification of ``subscription_id``."""
    n = notification(subscription_id, **body)
    return RcNotification(
        tenant_id=tenant_id,
        subscription_id=subscription_id,
        rc_message_id=n["body"]["id"],
        received_at=received_at or utcnow(),
        notification=n,
    )
