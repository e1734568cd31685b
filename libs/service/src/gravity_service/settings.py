"""What every service's settings repeat: environment, log level, where to listen, production checks.

Each service subclasses :class:`ServiceSettings` (together with
:class:`gravity_events.settings.KafkaSettings` when it speaks to the broker), re-declares ``host`` and
``port`` with its own ``GRAVITY_<SERVICE>_HOST`` / ``_PORT`` variables and defaults, and lists what it
refuses to run with in production by extending :meth:`ServiceSettings.production_problems`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Environment", "LogFormat", "LogLevel", "ServiceSettings", "weak_secret"]

Environment = Literal["development", "production"]
LogLevel = Literal["critical", "error", "warning", "info", "debug"]
LogFormat = Literal["text", "json"]


def weak_secret(secret: SecretStr | None, *, min_length: int, known: Collection[str] = ()) -> bool:
    """True if ``secret`` is missing, shorter than ``min_length`` or one of the ``known`` (published
    development) values: what production must refuse."""
    value = secret.get_secret_value() if secret is not None else ""
    return len(value) < min_length or value in known


class ServiceSettings(BaseSettings):
    """``GRAVITY_ENV``, ``GRAVITY_LOG_LEVEL`` / ``_FORMAT``, metrics labels and the listening address.

    Settings are read once at the entry point and passed down. In production, construction fails with
    every problem :meth:`production_problems` reports, so a weak configuration never starts.
    """

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    env: Environment = Field("development", validation_alias="GRAVITY_ENV")
    log_level: LogLevel = Field("info", validation_alias="GRAVITY_LOG_LEVEL")
    """Case-insensitive; also uvicorn's level."""
    log_format: LogFormat = Field("text", validation_alias="GRAVITY_LOG_FORMAT")
    """``text`` lines for people, or ``json``: one object per line (see :mod:`gravity_events.logs`)."""
    metrics_tenant_labels: bool = Field(False, validation_alias="GRAVITY_METRICS_TENANT_LABELS")
    """Add ``tenant`` (and ``app``) labels to the per-tenant metrics. Off by default: every tenant and app
    multiplies those series, which a large deployment's Prometheus pays for."""
    host: str = "127.0.0.1"
    """Re-declared by each service with its ``GRAVITY_<SERVICE>_HOST`` variable."""
    port: int = Field(0, ge=0, le=65_535)
    """Re-declared by each service with its ``GRAVITY_<SERVICE>_PORT`` variable and default."""

    @property
    def production(self) -> bool:
        """``GRAVITY_ENV=production``."""
        return self.env == "production"

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lowercase_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    def production_problems(self) -> list[str]:
        """What this configuration lacks for production, one sentence each; empty when fit.

        Subclasses extend the list (``problems = super().production_problems()``). Checked only when
        ``GRAVITY_ENV=production``; development may run on documented defaults.
        """
        return []

    @model_validator(mode="after")
    def _check_production(self) -> Self:
        if self.production:
            problems = self.production_problems()
            if problems:
                raise ValueError("refusing to start in production: " + "; ".join(problems))
        return self
