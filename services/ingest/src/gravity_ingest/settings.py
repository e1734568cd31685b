"""Ingest settings, read once from the environment at the entry point."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gravity_events.settings import KafkaSettings
from gravity_service.settings import ServiceSettings

__all__ = ["Settings"]


class Settings(ServiceSettings, KafkaSettings):
    """``GRAVITY_INGEST_*``, ``GRAVITY_ENV`` / ``GRAVITY_LOG_LEVEL`` and the shared broker variables."""

    host: str = Field("127.0.0.1", validation_alias="GRAVITY_INGEST_HOST")
    port: int = Field(8001, ge=0, le=65_535, validation_alias="GRAVITY_INGEST_PORT")
    max_body_bytes: int = Field(1024 * 1024, gt=0, validation_alias="GRAVITY_INGEST_MAX_BODY_BYTES")
    publish_timeout_seconds: float = Field(3.0, gt=0, validation_alias="GRAVITY_INGEST_PUBLISH_TIMEOUT")
    linger_ms: int = Field(1, ge=0, validation_alias="GRAVITY_INGEST_LINGER_MS")
    raw_partitioning: Literal["key", "batch"] = Field(
        "key", validation_alias="GRAVITY_INGEST_RAW_PARTITIONING"
    )
    """How raw records pick their partition: ``key`` hashes the rcMessageId; ``batch`` sends all records of
    a moment to one partition, turning round the partitions (``BatchPartitioner``), so that a produce
    request touches one partition. ``make run`` sets ``batch`` on its durable broker, which writes a
    request's partitions one after the other; the registry dedupes by message id, so nothing depends on
    which partition a raw record is in."""
