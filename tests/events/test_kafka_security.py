"""Kafka client security settings: every client gets the same options, SASL needs credentials, and a
production broker without TLS or SASL is warned about."""

from __future__ import annotations

import logging
import ssl

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import ValidationError

from gravity_events.settings import KafkaSettings


def test_plaintext_by_default() -> None:
    options = KafkaSettings(KAFKA_BOOTSTRAP_SERVERS="b:9092").client_options()
    assert options == {"bootstrap_servers": "b:9092", "security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_sasl_ssl_options_are_accepted_by_aiokafka(mechanism: str) -> None:
    settings = KafkaSettings(
        KAFKA_BOOTSTRAP_SERVERS="b:9093",
        KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        KAFKA_SASL_MECHANISM=mechanism,
        KAFKA_SASL_USERNAME="gravity",
        KAFKA_SASL_PASSWORD="s3cret",
    )
    options = settings.client_options()
    assert options["sasl_mechanism"] == mechanism and options["sasl_plain_password"] == "s3cret"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert "s3cret" not in repr(settings), "the password is a secret in the settings' repr"
    # aiokafka validates the combination when a client is built (no connection is made)
    producer = AIOKafkaProducer(**options)
    consumer = AIOKafkaConsumer(**options)
    try:
        assert producer.client._security_protocol == "SASL_SSL"
        assert consumer._client._sasl_mechanism == mechanism
    finally:
        await producer.stop()
        await consumer.stop()


def test_sasl_without_credentials_is_refused() -> None:
    with pytest.raises(ValidationError, match="needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"):
        KafkaSettings(KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT", KAFKA_SASL_USERNAME="u")


def test_an_unknown_protocol_is_refused() -> None:
    with pytest.raises(ValidationError):
        KafkaSettings(KAFKA_SECURITY_PROTOCOL="TLS")


def test_production_on_plaintext_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gravity_events.settings"):
        KafkaSettings().warn_if_plaintext(production=False)
        assert not caplog.records
        KafkaSettings().warn_if_plaintext(production=True)
    assert "PLAINTEXT in production" in caplog.text
