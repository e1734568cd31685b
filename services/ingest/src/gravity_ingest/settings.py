"""Ingest settings, read once from the environment at the entry point."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gravity_events.settings import KafkaSettings

__all__ = ["Settings"]


class Settings(KafkaSettings):
    """``GRAVITY_INGEST_*`` plus the shared broker variables."""

    env: Literal["development", "production"] = Field("development", validation_alias="GRAVITY_ENV")
    log_level: str = Field("info", validation_alias="GRAVITY_LOG_LEVEL")
    host: str = Field("127.0.0.1", validation_alias="GRAVITY_INGEST_HOST")
    port: int = Field(8001, validation_alias="GRAVITY_INGEST_PORT")
    max_body_bytes: int = Field(1024 * 1024, validation_alias="GRAVITY_INGEST_MAX_BODY_BYTES")
    publish_timeout_seconds: float = Field(3.0, validation_alias="GRAVITY_INGEST_PUBLISH_TIMEOUT")
