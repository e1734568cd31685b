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
    order_lock_timeout_seconds: float = Field(
        30.0, gt=0, validation_alias="GRAVITY_REGISTRY_ORDER_LOCK_TIMEOUT_SECONDS"
    )
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
    keeper_poll_seconds: float = Field(1.0, validation_alias="GRAVITY_REGISTRY_KEEPER_POLL_SECONDS")

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
