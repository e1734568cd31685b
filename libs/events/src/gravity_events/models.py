"""Every record on every Gravity topic, as frozen pydantic models.

Each model has a ``type`` literal that discriminates it within its topic. JSON field names are
camelCase. The schema version travels in the ``gravity-schema-version`` record header (see
:mod:`gravity_events.codec`), not in the body, so that the ``sms_inbound`` body stays byte-identical to
the contract's webhook payload.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer
from pydantic.alias_generators import to_camel

from gravity_events.ids import format_timestamp

__all__ = [
    "ApiKeyActive",
    "ApiKeyRevoked",
    "AppDeleted",
    "AppEndpointDisabled",
    "AppUpserted",
    "DeliveryAttempt",
    "DeliveryGuardCleared",
    "DeliveryRequested",
    "DeliveryRetry",
    "EncryptedSecret",
    "Event",
    "RcNotification",
    "RetriesFinished",
    "SmsInbound",
    "SubscriptionActive",
    "SubscriptionRemoved",
    "Timestamp",
]


def _to_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp must carry a UTC offset")
    return value.astimezone(UTC)


Timestamp = Annotated[
    datetime,
    AfterValidator(_to_utc),
    PlainSerializer(format_timestamp, return_type=str, when_used="json"),
]
"""Aware UTC datetime, rendered as ``2026-03-01T14:30:00.000Z``."""


class Event(BaseModel):
    """Base of every record: frozen, camelCase on the wire, unknown fields ignored on read."""

    model_config = ConfigDict(frozen=True, alias_generator=to_camel, populate_by_name=True, extra="ignore")


# -- gravity.rc.raw.v1 ---------------------------------------------------------------------------


class RcNotification(Event):
    """A verified RingCentral inbound-SMS notification as ingest (or backfill) accepted it."""

    type: Literal["rc_notification"] = "rc_notification"
    tenant_id: str
    subscription_id: str
    rc_message_id: str
    received_at: Timestamp
    source: Literal["webhook", "backfill"] = "webhook"
    notification: dict[str, Any]
    """The notification JSON exactly as RingCentral sent it (for backfill: built from the list API)."""


# -- gravity.sms.inbound.v1 ----------------------------------------------------------------------


class SmsInbound(Event):
    """The canonical ``sms_inbound`` event: the webhook body, the WebSocket frame, the topic record."""

    type: Literal["sms_inbound"] = "sms_inbound"
    message_id: str
    from_: str = Field(alias="from")
    to: str
    body: str
    rc_message_id: str
    tenant_id: str
    timestamp: Timestamp


# -- gravity.registry.subscriptions.v1 -----------------------------------------------------------


class SubscriptionActive(Event):
    """A RingCentral subscription whose notifications ingest accepts for ``tenant_id``.

    Only the SHA-256 of the verification token travels: ingest hashes the presented header and
    compares digests in constant time, so the token itself never leaves the registry.
    """

    type: Literal["subscription_active"] = "subscription_active"
    subscription_id: str
    tenant_id: str
    verification_token_sha256: str


class SubscriptionRemoved(Event):
    """The subscription was replaced or deleted: its notifications are refused from now on."""

    type: Literal["subscription_removed"] = "subscription_removed"
    subscription_id: str
    tenant_id: str


# -- gravity.registry.api-keys.v1 ----------------------------------------------------------------


class ApiKeyActive(Event):
    """An API key that authenticates ``tenant_id``: only its SHA-256 hash travels."""

    type: Literal["api_key_active"] = "api_key_active"
    key_id: str
    tenant_id: str
    key_sha256: str


class ApiKeyRevoked(Event):
    """The key was deleted: refuse it and close the sockets it opened."""

    type: Literal["api_key_revoked"] = "api_key_revoked"
    key_id: str
    tenant_id: str


# -- gravity.registry.apps.v1 --------------------------------------------------------------------


class EncryptedSecret(Event):
    """A signing secret encrypted with the key derived from ``GRAVITY_SECRET_KEY``."""

    ciphertext: str
    expires_at: Timestamp | None = None


class AppUpserted(Event):
    """An app's delivery configuration as it is now."""

    type: Literal["app_upserted"] = "app_upserted"
    app_id: str
    tenant_id: str
    webhook_url: str | None
    disabled: bool
    signing_secrets: tuple[EncryptedSecret, ...]
    updated_at: Timestamp


class AppDeleted(Event):
    """The app is gone: stop delivering to it."""

    type: Literal["app_deleted"] = "app_deleted"
    app_id: str
    tenant_id: str


# -- gravity.deliveries.v1 -----------------------------------------------------------------------


class DeliveryAttempt(Event):
    """One webhook delivery attempt, successful or not."""

    type: Literal["delivery_attempt"] = "delivery_attempt"
    app_id: str
    tenant_id: str
    message_id: str
    attempt: int
    succeeded: bool
    response_code: int | None
    duration_ms: float
    error: str | None
    attempted_at: Timestamp
    next_attempt_at: Timestamp | None = None


class AppEndpointDisabled(Event):
    """Fanout gave up on an endpoint that failed continuously for the disable window (Svix: 5 days).

    The registry projects it onto the app (``disabled: true``); a ``PUT`` with ``"disabled": false``
    re-enables it and republishes the app.
    """

    type: Literal["app_endpoint_disabled"] = "app_endpoint_disabled"
    app_id: str
    tenant_id: str
    failing_since: Timestamp
    disabled_at: Timestamp


# -- gravity.fanout.requests.v1 ------------------------------------------------------------------


class DeliveryRequested(Event):
    """Deliver this message to this app now (``POST /v1/apps/{appId}/deliveries/{messageId}/retry``)."""

    type: Literal["delivery_requested"] = "delivery_requested"
    app_id: str
    tenant_id: str
    event: SmsInbound
    requested_at: Timestamp


# -- gravity.fanout.retry.v1 ---------------------------------------------------------------------


class DeliveryRetry(Event):
    """A failed delivery waiting for its next attempt; fanout's durable retry state."""

    type: Literal["delivery_retry"] = "delivery_retry"
    app_id: str
    tenant_id: str
    attempt: int
    """The number the next attempt will carry (the first attempt is 1)."""
    due_at: Timestamp
    first_attempted_at: Timestamp
    event: SmsInbound
    guard_id: str | None = None
    """Set on a guard: attempt ``attempt`` was still under way on the copy that wrote this when its
    message's offset was committed. The guard is void once a :class:`DeliveryGuardCleared` with this id
    follows (the attempt ended and was recorded); otherwise, when due, the attempt is made again."""


class DeliveryGuardCleared(Event):
    """The attempt a guard stood for ended and its outcome is recorded: the guard is void."""

    type: Literal["delivery_guard_cleared"] = "delivery_guard_cleared"
    app_id: str
    tenant_id: str
    guard_id: str


class RetriesFinished(Event):
    """Records of this partition of the retry queue that one fanout copy finished while the partition's
    committed offset stayed below them (an earlier retry still waiting or under way). The copy that takes
    the partition over reads up to the end first and passes over these offsets. Empty ``offsets``: a mark,
    written to learn where the end is."""

    type: Literal["retries_finished"] = "retries_finished"
    partition: int
    offsets: tuple[tuple[int, int], ...] = ()
    """Inclusive ranges ``(first, last)`` of finished offsets, ascending."""
