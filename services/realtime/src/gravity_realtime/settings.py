"""Realtime settings, read once from the environment at the entry point."""

from __future__ import annotations

from pydantic import Field

from gravity_events.settings import KafkaSettings
from gravity_service.settings import ServiceSettings

__all__ = ["Settings"]


class Settings(ServiceSettings, KafkaSettings):
    """``GRAVITY_REALTIME_*``, ``GRAVITY_ENV`` / ``GRAVITY_LOG_LEVEL`` and the shared broker variables."""

    host: str = Field("127.0.0.1", validation_alias="GRAVITY_REALTIME_HOST")
    port: int = Field(8002, ge=0, le=65_535, validation_alias="GRAVITY_REALTIME_PORT")
    registry_url: str = Field("http://127.0.0.1:8000", validation_alias="GRAVITY_REGISTRY_URL")
    max_queued_frames: int = Field(1000, validation_alias="GRAVITY_REALTIME_MAX_QUEUED_FRAMES")
    """Frames waiting for one slow client before it is disconnected (memory stays bounded)."""
    close_grace_seconds: float = Field(5.0, gt=0, validation_alias="GRAVITY_REALTIME_CLOSE_GRACE_SECONDS")
    """How long a closing socket may take to flush its close frame before the connection is dropped."""
    ping_interval_seconds: float = Field(20.0, validation_alias="GRAVITY_REALTIME_PING_INTERVAL")
    ping_timeout_seconds: float = Field(20.0, validation_alias="GRAVITY_REALTIME_PING_TIMEOUT")
    start_margin_seconds: float = Field(5.0, validation_alias="GRAVITY_REALTIME_START_MARGIN")
    """The live stream starts this long before the process did; older records are skipped."""
