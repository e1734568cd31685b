"""Settings the test suite adds for the kind of broker it runs against.

``kind`` is ``Infra.kafka_source`` (gravity_devstack.infra): "environment", "testcontainers (apache/kafka)"
or "embedded Tansu (...)". Kept apart from the fixtures so the values a real Kafka would be sent can be
checked without starting one.
"""

from __future__ import annotations

__all__ = ["broker_overrides"]

TANSU_SESSION_TIMEOUT_MS = 3_000
"""Tansu answers a JoinGroup after half the session timeout, so 3 s halves every consumer's start-up on
the embedded broker; Apache Kafka rejects it (its ``group.min.session.timeout.ms`` is 6 s)."""


def broker_overrides(kind: str) -> dict[str, int]:
    """The ``KafkaSettings`` fields to set on top of the defaults for a broker of this kind."""
    if kind.startswith("embedded Tansu"):
        return {"KAFKA_SESSION_TIMEOUT_MS": TANSU_SESSION_TIMEOUT_MS}
    # a real Kafka takes the services' own defaults, the values production runs with
    return {}
