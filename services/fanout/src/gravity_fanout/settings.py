"""Fanout settings, read once from the environment at the entry point."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from gravity_events.settings import KafkaSettings
from gravity_service.settings import ServiceSettings, weak_secret
from gravity_webhooks import DEVELOPMENT_SECRET_KEY, is_development_key

__all__ = ["DEFAULT_RETRY_SCHEDULE", "Settings"]

DEFAULT_RETRY_SCHEDULE = (5.0, 30.0, 120.0, 600.0, 1800.0, 7200.0, 21600.0, 43200.0)
"""Seconds before attempts 2…9: 5 s, 30 s, 2 min, 10 min, 30 min, 2 h, 6 h, 12 h (about 21 h in all)."""


class Settings(ServiceSettings, KafkaSettings):
    """``GRAVITY_FANOUT_*``, ``GRAVITY_ENV`` / ``GRAVITY_LOG_LEVEL``, ``GRAVITY_SECRET_KEY`` and the broker
    variables."""

    host: str = Field("127.0.0.1", validation_alias="GRAVITY_FANOUT_HOST")
    port: int = Field(8003, ge=0, le=65_535, validation_alias="GRAVITY_FANOUT_PORT")
    secret_key: SecretStr | None = Field(None, validation_alias="GRAVITY_SECRET_KEY")
    consumer_group: str = Field("gravity-fanout", validation_alias="GRAVITY_FANOUT_CONSUMER_GROUP")
    timeout_seconds: float = Field(5.0, gt=0, validation_alias="GRAVITY_FANOUT_TIMEOUT_SECONDS")
    per_app_concurrency: int = Field(8, ge=1, validation_alias="GRAVITY_FANOUT_PER_APP_CONCURRENCY")
    per_app_queue: int = Field(200, ge=1, validation_alias="GRAVITY_FANOUT_PER_APP_QUEUE")
    first_attempt_window_seconds: float = Field(
        1.0, gt=0, validation_alias="GRAVITY_FANOUT_FIRST_ATTEMPT_WINDOW_SECONDS"
    )
    """How long a first attempt may wait in its app's lane before it is handed to the retry queue."""
    failing_window_seconds: float = Field(0.1, gt=0, validation_alias="GRAVITY_FANOUT_FAILING_WINDOW_SECONDS")
    """The first-attempt window of an app that is not delivering: its last attempt failed, or its workers
    have all been busy for a whole first-attempt window (at most ``first_attempt_window_seconds``)."""
    guard_grace_seconds: float = Field(30.0, gt=0, validation_alias="GRAVITY_FANOUT_GUARD_GRACE_SECONDS")
    """How long after an attempt's timeout its guard falls due (see :meth:`Deliverer.guard
    <gravity_fanout.handlers.Deliverer.guard>`): the attempt's copy must have voided the guard by then, so
    this covers a slow, overloaded broker. Longer costs only the time until a dead copy's attempt is made
    again."""
    max_in_flight: int = Field(5000, ge=1, validation_alias="GRAVITY_FANOUT_MAX_IN_FLIGHT")
    retry_concurrency: int = Field(100, ge=1, validation_alias="GRAVITY_FANOUT_RETRY_CONCURRENCY")
    tenant_share: float = Field(1.0, gt=0, le=1, validation_alias="GRAVITY_FANOUT_TENANT_SHARE")
    """The part of ``max_in_flight`` and of ``retry_concurrency`` one tenant may hold."""
    retry_schedule: Annotated[tuple[float, ...], NoDecode] = Field(
        DEFAULT_RETRY_SCHEDULE, validation_alias="GRAVITY_FANOUT_RETRY_SCHEDULE"
    )
    retry_jitter: float = Field(0.1, ge=0, lt=1, validation_alias="GRAVITY_FANOUT_RETRY_JITTER")
    disable_after_seconds: float = Field(
        5 * 86_400, gt=0, validation_alias="GRAVITY_FANOUT_DISABLE_AFTER_SECONDS"
    )
    max_connections_per_app: int = Field(16, ge=1, validation_alias="GRAVITY_FANOUT_MAX_CONNECTIONS_PER_APP")
    linger_ms: int = Field(1, ge=0, validation_alias="GRAVITY_FANOUT_LINGER_MS")
    """How long the producer of the attempt log and the retry queue waits to fill a batch."""

    @property
    def guard_delay_seconds(self) -> float:
        """Seconds from an attempt's start to its guard's due time."""
        return self.timeout_seconds + self.guard_grace_seconds

    def tenant_cap(self, slots: int) -> int:
        """How many of ``slots`` one tenant may hold (at least one)."""
        return max(1, int(slots * self.tenant_share))

    @field_validator("retry_schedule", mode="before")
    @classmethod
    def _schedule(cls, value: object) -> object:
        """Accept ``[5, 30, 120]`` (JSON) or ``5,30,120`` as well as a sequence."""
        if isinstance(value, int | float):
            return (float(value),)
        if isinstance(value, str):
            text = value.strip().removeprefix("[").removesuffix("]")
            return tuple(float(part) for part in text.split(",") if part.strip())
        return value

    def production_problems(self) -> list[str]:
        """The shared checks, plus the registry's secret key (to open the apps' signing secrets)."""
        problems = super().production_problems()
        if weak_secret(self.secret_key, min_length=1):
            problems.append("production needs GRAVITY_SECRET_KEY (the registry's)")
        elif is_development_key(self.secret_key.get_secret_value() if self.secret_key else ""):
            problems.append("production must not use the published development GRAVITY_SECRET_KEY")
        return problems

    @model_validator(mode="after")
    def _schedule_and_development_defaults(self) -> Self:
        if not self.production and (self.secret_key is None or not self.secret_key.get_secret_value()):
            self.secret_key = SecretStr(DEVELOPMENT_SECRET_KEY)
        if not self.retry_schedule:
            raise ValueError("GRAVITY_FANOUT_RETRY_SCHEDULE needs at least one delay")
        return self
