"""Fanout settings, read once from the environment at the entry point."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gravity_events.settings import KafkaSettings

__all__ = ["Settings"]


class Settings(KafkaSettings):
    """``GRAVITY_FANOUT_*`` plus the shared broker variables."""

    env: Literal["development", "production"] = Field("development", validation_alias="GRAVITY_ENV")
    log_level: str = Field("info", validation_alias="GRAVITY_LOG_LEVEL")
    host: str = Field("127.0.0.1", validation_alias="GRAVITY_FANOUT_HOST")
    port: int = Field(8003, validation_alias="GRAVITY_FANOUT_PORT")
