"""Settings every Kafka-speaking service shares (pydantic-settings, read from the environment)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["KafkaSettings"]


class KafkaSettings(BaseSettings):
    """Broker connection. Services subclass it and add their own prefixed fields.

    ``KAFKA_ENABLE_IDEMPOTENCE`` is true for Apache Kafka; the embedded Tansu broker does not
    implement InitProducerId, so the dev stack sets it false.
    """

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", validation_alias="KAFKA_BOOTSTRAP_SERVERS")
    kafka_enable_idempotence: bool = Field(True, validation_alias="KAFKA_ENABLE_IDEMPOTENCE")
    kafka_replication_factor: int = Field(1, validation_alias="KAFKA_REPLICATION_FACTOR")
    kafka_fetch_max_wait_ms: int = Field(10, validation_alias="KAFKA_FETCH_MAX_WAIT_MS")
