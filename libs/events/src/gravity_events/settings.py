"""Settings every Kafka-speaking service shares (pydantic-settings, read from the environment)."""

from __future__ import annotations

import logging
import ssl
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["KafkaSettings"]

log = logging.getLogger(__name__)


class KafkaSettings(BaseSettings):
    """Broker connection. Services subclass it and add their own prefixed fields.

    ``KAFKA_ENABLE_IDEMPOTENCE`` is true for Apache Kafka; the embedded Tansu broker does not
    implement InitProducerId, so the dev stack sets it false.

    Security: ``KAFKA_SECURITY_PROTOCOL`` (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL),
    ``KAFKA_SASL_MECHANISM`` (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) with ``KAFKA_SASL_USERNAME`` /
    ``KAFKA_SASL_PASSWORD``, and for TLS ``KAFKA_SSL_CA_FILE`` (the broker's CA; the system's when unset),
    ``KAFKA_SSL_CERT_FILE`` / ``KAFKA_SSL_KEY_FILE`` (a client certificate, for mutual TLS). Every client a
    service builds takes them through :meth:`client_options`. The change streams on the broker are the
    source of authority for API keys and subscriptions, so production on PLAINTEXT is logged as a warning
    at start.
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
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", validation_alias="KAFKA_SECURITY_PROTOCOL"
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", validation_alias="KAFKA_SASL_MECHANISM"
    )
    kafka_sasl_username: str | None = Field(None, validation_alias="KAFKA_SASL_USERNAME")
    kafka_sasl_password: SecretStr | None = Field(None, validation_alias="KAFKA_SASL_PASSWORD")
    kafka_ssl_ca_file: str | None = Field(None, validation_alias="KAFKA_SSL_CA_FILE")
    kafka_ssl_cert_file: str | None = Field(None, validation_alias="KAFKA_SSL_CERT_FILE")
    kafka_ssl_key_file: str | None = Field(None, validation_alias="KAFKA_SSL_KEY_FILE")

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> KafkaSettings:
        if self.kafka_security_protocol.startswith("SASL_") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                f"KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs KAFKA_SASL_USERNAME and "
                "KAFKA_SASL_PASSWORD"
            )
        return self

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for every aiokafka client (producer, consumer, admin): the bootstrap servers
        and the security settings."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.kafka_bootstrap_servers,
            "security_protocol": self.kafka_security_protocol,
        }
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            context = ssl.create_default_context(cafile=self.kafka_ssl_ca_file)
            if self.kafka_ssl_cert_file:
                context.load_cert_chain(self.kafka_ssl_cert_file, self.kafka_ssl_key_file)
            options["ssl_context"] = context
        if self.kafka_security_protocol.startswith("SASL_"):
            options["sasl_mechanism"] = self.kafka_sasl_mechanism
            options["sasl_plain_username"] = self.kafka_sasl_username
            options["sasl_plain_password"] = (
                self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else None
            )
        return options

    def warn_if_plaintext(self, *, production: bool) -> None:
        """Log a warning when production talks to its broker without TLS or SASL."""
        if production and self.kafka_security_protocol == "PLAINTEXT":
            log.warning(
                "KAFKA_SECURITY_PROTOCOL is PLAINTEXT in production: the broker's change streams decide "
                "which API keys and RingCentral subscriptions are valid, so anyone who can write to it can "
                "grant access; use SASL_SSL (or SSL with client certificates) and broker ACLs"
            )
