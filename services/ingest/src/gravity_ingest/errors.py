"""Ingest's errors, answered in the contract's body by :mod:`gravity_service.errors`.

GravityError
└── IngestError
    ├── PayloadTooLarge      413 payload_too_large
    ├── InvalidNotification  400 invalid_notification
    ├── Unauthorized         401 unauthorized
    ├── BrokerUnavailable    503 broker_unavailable (retriable: RingCentral redelivers)
    └── NotReady             503 not_ready (retriable: the subscription stream is still being replayed)

Anything unexpected on the webhook is logged and answered 500 ``internal_error`` in the same shape.
Each class names its ``outcome``: the label it counts under in ``gravity_ingest_notifications_total``.
"""

from __future__ import annotations

from typing import ClassVar

from gravity_service.errors import GravityError

__all__ = [
    "BrokerUnavailable",
    "IngestError",
    "InvalidNotification",
    "NotReady",
    "PayloadTooLarge",
    "Unauthorized",
]


class IngestError(GravityError):
    """Base of every error ingest answers with; ``code`` and ``status`` per the contract."""

    outcome: ClassVar[str] = "error"


class PayloadTooLarge(IngestError):
    """The body is larger than the limit (1 MiB by default)."""

    code, status = "payload_too_large", 413
    outcome = "too_large"


class InvalidNotification(IngestError):
    """Malformed JSON, or JSON that is not a RingCentral notification / usable SMS."""

    code, status = "invalid_notification", 400
    outcome = "invalid"


class Unauthorized(IngestError):
    """Missing or wrong Verification-Token, or an unknown or removed subscription."""

    code, status = "unauthorized", 401
    outcome = "unauthorized"


class BrokerUnavailable(IngestError):
    """The broker did not acknowledge the append in time."""

    code, status, retriable = "broker_unavailable", 503, True
    outcome = "broker_unavailable"


class NotReady(IngestError):
    """Ingest has not finished replaying the subscription stream, so it cannot verify tokens yet."""

    code, status, retriable = "not_ready", 503, True
    outcome = "not_ready"
