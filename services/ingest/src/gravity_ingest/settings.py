"""Ingest settings, read once from the environment at the entry point."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from gravity_events.settings import KafkaSettings

__all__ = ["Settings"]


class Settings(KafkaSettings):
    """``GRAVITY_INGEST_*`` plus the shared broker variables."""

    env: Literal["development", "production"] = Field("development", validation_alias="GRAVITY_ENV")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", validation_alias="GRAVITY_LOG_LEVEL"
    )
    host: str = Field("127.0.0.1", validation_alias="GRAVITY_INGEST_HOST")
    port: int = Field(8001, validation_alias="GRAVITY_INGEST_PORT")
    max_body_bytes: int = Field(1024 * 1024, gt=0, validation_alias="GRAVITY_INGEST_MAX_BODY_BYTES")
    publish_timeout_seconds: float = Field(3.0, gt=0, validation_alias="GRAVITY_INGEST_PUBLISH_TIMEOUT")
    linger_ms: int = Field(0, ge=0, validation_alias="GRAVITY_INGEST_LINGER_MS")

    @field_validator("log_level", mode="before")
    @classmethod
    def _lowercase_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value
