"""In production a service verifies the topics and never creates them: they are provisioned once, with
the cluster's replication settings, by ``gravity-registry topics``."""

from __future__ import annotations

from pathlib import Path

import pytest

from gravity_devstack.kafka import TansuBroker
from gravity_events import topics
from gravity_events.kafka import MissingTopicsError, ensure_topics
from gravity_events.settings import KafkaSettings


async def test_verify_only_refuses_missing_topics_and_accepts_provisioned_ones(tmp_path: Path) -> None:
    broker = TansuBroker(log=tmp_path / "tansu.log")
    try:
        await broker.wait_ready()
        settings = KafkaSettings(
            KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers, KAFKA_ENABLE_IDEMPOTENCE=False
        )
        with pytest.raises(MissingTopicsError, match="gravity-registry topics") as refused:
            await ensure_topics(settings, create=False, timeout=10)
        assert topics.SMS_INBOUND in str(refused.value)
        await ensure_topics(settings)  # what the provisioning step does
        await ensure_topics(settings, create=False, timeout=10)
    finally:
        broker.stop()
