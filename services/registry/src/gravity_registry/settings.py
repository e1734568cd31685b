"""Registry settings, read once from the environment at the entry point."""

from __future__ import annotations

from typing import Self

from pydantic import Field, SecretStr, model_validator

from gravity_events.settings import KafkaSettings
from gravity_service.settings import ServiceSettings, weak_secret
from gravity_webhooks import DEVELOPMENT_SECRET_KEY, is_development_key, parse_secret_keys

__all__ = ["Settings"]

DEV_ADMIN_TOKEN = "dev-admin-token"  # noqa: S105 - the documented development default
DEV_SECRET_KEY = DEVELOPMENT_SECRET_KEY


class Settings(ServiceSettings, KafkaSettings):
    """``GRAVITY_REGISTRY_*``, ``GRAVITY_ENV`` / ``GRAVITY_LOG_LEVEL``, the shared secrets, and the broker
    variables.

    Production refuses to start without an admin token and a secret key, and refuses the
    development admin token. Development falls back to documented, well-known values for both.
    """

    host: str = Field("127.0.0.1", validation_alias="GRAVITY_REGISTRY_HOST")
    port: int = Field(8000, ge=0, le=65_535, validation_alias="GRAVITY_REGISTRY_PORT")
    database_url: SecretStr = Field(SecretStr(""), validation_alias="DATABASE_URL")
    admin_token: SecretStr | None = Field(None, validation_alias="GRAVITY_ADMIN_TOKEN")
    secret_key: SecretStr | None = Field(None, validation_alias="GRAVITY_SECRET_KEY")
    public_url: str = Field("http://127.0.0.1:8001", validation_alias="GRAVITY_PUBLIC_URL")
    consumer_group: str = Field(
        "gravity-registry-projector", validation_alias="GRAVITY_REGISTRY_CONSUMER_GROUP"
    )
    outbox_sweep_seconds: float = Field(1.0, validation_alias="GRAVITY_REGISTRY_OUTBOX_SWEEP_SECONDS")
    linger_ms: int = Field(1, ge=0, validation_alias="GRAVITY_REGISTRY_LINGER_MS")
    """How long the producer of the outbox (``sms_inbound``, the change streams) waits to fill a batch."""
    order_lock_timeout_seconds: float = Field(
        30.0, gt=0, validation_alias="GRAVITY_REGISTRY_ORDER_LOCK_TIMEOUT_SECONDS"
    )
    # Limits: what one tenant may make the registry do
    max_body_bytes: int = Field(64 * 1024, gt=0, validation_alias="GRAVITY_REGISTRY_MAX_BODY_BYTES")
    """Largest request body; a larger one is refused with 413 before it is parsed."""
    max_apps_per_tenant: int = Field(100, ge=1, le=1_000, validation_alias="GRAVITY_MAX_APPS_PER_TENANT")
    """Apps one tenant may have; the next ``POST /v1/apps`` is 409. It also bounds ``GET /v1/apps``, which
    answers every app of the tenant in one response (hence the upper bound of 1,000)."""
    test_webhook_per_minute: float = Field(
        10, gt=0, validation_alias="GRAVITY_REGISTRY_TEST_WEBHOOK_PER_MINUTE"
    )
    test_webhook_burst: int = Field(5, ge=1, validation_alias="GRAVITY_REGISTRY_TEST_WEBHOOK_BURST")
    """``POST /v1/apps/{appId}/test-webhook`` per tenant: a token bucket of ``burst`` tokens refilled at
    ``per_minute``; an empty bucket answers 429 with ``Retry-After``."""
    resend_per_minute: float = Field(60, gt=0, validation_alias="GRAVITY_REGISTRY_RESEND_PER_MINUTE")
    resend_burst: int = Field(20, ge=1, validation_alias="GRAVITY_REGISTRY_RESEND_BURST")
    """``POST /v1/apps/{appId}/deliveries/{messageId}/retry`` per tenant, the same way."""
    republish_check: bool = Field(True, validation_alias="GRAVITY_REGISTRY_REPUBLISH_CHECK")
    """At start, before ready: republish a change stream that lacks a live entity of the database."""
    # RingCentral connections and their keeper
    rc_timeout_seconds: float = Field(10.0, validation_alias="GRAVITY_RC_TIMEOUT_SECONDS")
    rc_subscription_expires_in: int = Field(
        604_800, ge=60, validation_alias="GRAVITY_RC_SUBSCRIPTION_EXPIRES_IN"
    )
    rc_renew_before_seconds: float = Field(86_400, validation_alias="GRAVITY_RC_RENEW_BEFORE_SECONDS")
    rc_check_interval_seconds: float = Field(300, validation_alias="GRAVITY_RC_CHECK_INTERVAL_SECONDS")
    rc_retry_seconds: float = Field(30, validation_alias="GRAVITY_RC_RETRY_SECONDS")
    rc_token_margin_seconds: float = Field(300, validation_alias="GRAVITY_RC_TOKEN_MARGIN_SECONDS")
    rc_backfill_overlap_seconds: float = Field(300, validation_alias="GRAVITY_RC_BACKFILL_OVERLAP_SECONDS")
    rc_retry_max_seconds: float = Field(3600, gt=0, validation_alias="GRAVITY_RC_RETRY_MAX_SECONDS")
    """The longest back-off after repeated failed checks (each failure doubles ``rc_retry_seconds``)."""
    rc_call_deadline_seconds: float = Field(30, gt=0, validation_alias="GRAVITY_RC_CALL_DEADLINE_SECONDS")
    """One RingCentral call, start to last byte, whatever the server trickles."""
    rc_check_deadline_seconds: float = Field(300, gt=0, validation_alias="GRAVITY_RC_CHECK_DEADLINE_SECONDS")
    """One keeper check of one connection, every call and the backfill included."""
    rc_max_response_bytes: int = Field(1_048_576, ge=4096, validation_alias="GRAVITY_RC_MAX_RESPONSE_BYTES")
    """The most of one RingCentral answer read; a longer one is a failed call."""
    rc_backfill_max_pages: int = Field(50, ge=1, validation_alias="GRAVITY_RC_BACKFILL_MAX_PAGES")
    """Message-store pages one backfill reads (100 messages each) before it stops."""
    rc_keeper_concurrency: int = Field(8, ge=1, validation_alias="GRAVITY_RC_KEEPER_CONCURRENCY")
    """Connections one registry copy checks at the same time."""
    rc_allowed_hosts: str = Field(
        "platform.ringcentral.com,platform.devtest.ringcentral.com",
        validation_alias="GRAVITY_RC_ALLOWED_HOSTS",
    )
    """Comma-separated hosts a ``serverUrl`` may name in production (development allows any)."""
    keeper_poll_seconds: float = Field(1.0, validation_alias="GRAVITY_REGISTRY_KEEPER_POLL_SECONDS")

    @property
    def rc_allowed_host_set(self) -> frozenset[str]:
        """``GRAVITY_RC_ALLOWED_HOSTS`` as lower-case host names."""
        return frozenset(h.strip().lower().rstrip(".") for h in self.rc_allowed_hosts.split(",") if h.strip())

    @property
    def webhook_address(self) -> str:
        """Where RingCentral delivers: ``GRAVITY_PUBLIC_URL + /v1/webhooks/ringcentral``."""
        return self.public_url.rstrip("/") + "/v1/webhooks/ringcentral"

    def production_problems(self) -> list[str]:
        """The shared checks, plus a strong admin token (not the development one) and secret key."""
        problems = super().production_problems()
        if weak_secret(self.admin_token, min_length=24, known=(DEV_ADMIN_TOKEN,)):
            problems.append("production needs GRAVITY_ADMIN_TOKEN (24+ characters, not the dev one)")
        keys = parse_secret_keys(self.secret_key.get_secret_value()) if self.secret_key else []
        if not keys or any(len(key) < 32 for key in keys):
            problems.append("production needs GRAVITY_SECRET_KEY (each key 32+ characters)")
        elif is_development_key(self.secret_key.get_secret_value() if self.secret_key else ""):
            problems.append("production must not use the published development GRAVITY_SECRET_KEY")
        return problems

    @model_validator(mode="after")
    def _database_and_development_defaults(self) -> Self:
        if not self.database_url.get_secret_value():
            raise ValueError("DATABASE_URL is required")
        if not self.production:
            if self.admin_token is None:
                self.admin_token = SecretStr(DEV_ADMIN_TOKEN)
            if self.secret_key is None:
                self.secret_key = SecretStr(DEV_SECRET_KEY)
        return self
