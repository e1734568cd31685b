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
    kafka_session_timeout_ms: int = Field(6_000, ge=1_000, validation_alias="KAFKA_SESSION_TIMEOUT_MS")
    """Consumer-group session timeout: how soon a dead member's partitions move to the others.

    6 s is Apache Kafka's ``group.min.session.timeout.ms``. Tansu also answers a JoinGroup after half of
    it, so it is most of a consumer's start-up time on the embedded broker.
    """
