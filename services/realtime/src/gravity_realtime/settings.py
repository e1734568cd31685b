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
    max_connections_per_key: int = Field(
        100, ge=1, validation_alias="GRAVITY_REALTIME_MAX_CONNECTIONS_PER_KEY"
    )
    """Open sockets one API key may hold on one realtime copy; the next is refused with HTTP 429."""
    max_client_frame_bytes: int = Field(
        4096, ge=128, le=1_048_576, validation_alias="GRAVITY_REALTIME_MAX_CLIENT_FRAME_BYTES"
    )
    """Largest message a client may send (the server ignores them anyway); a larger one closes with 1009."""
    max_resume_messages: int = Field(10_000, ge=1, validation_alias="GRAVITY_REALTIME_MAX_RESUME_MESSAGES")
    """History messages one resume streams; a resume further back is closed with 4413 after that many."""
    key_lookup_path: str = Field("/v1/api-keys/me", validation_alias="GRAVITY_REALTIME_KEY_LOOKUP_PATH")
    """Registry route that names the tenant of a presented key, asked for a key the change stream has not
    brought yet (a key used right after the API returned it); empty turns the lookup off."""
    key_cache_seconds: float = Field(30.0, gt=0, validation_alias="GRAVITY_REALTIME_KEY_CACHE_SECONDS")
    """How long a key the registry confirmed is trusted without the change stream."""
    key_miss_cache_seconds: float = Field(
        10.0, gt=0, validation_alias="GRAVITY_REALTIME_KEY_MISS_CACHE_SECONDS"
    )
    """How long a key the registry refused is refused without asking again."""
    key_lookups_per_second: float = Field(
        20.0, gt=0, validation_alias="GRAVITY_REALTIME_KEY_LOOKUPS_PER_SECOND"
    )
    """Registry lookups per second, for all unknown keys together (a token bucket)."""
    key_lookup_burst: int = Field(20, ge=1, validation_alias="GRAVITY_REALTIME_KEY_LOOKUP_BURST")
    """Lookups that may be made at once before the rate applies."""
