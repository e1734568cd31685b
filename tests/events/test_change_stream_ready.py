"""A change-stream reader is ready when it has read what was there, not at its first empty poll."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.support import eventually, publish_events, subscription_active

from gravity_devstack.kafka import TansuBroker
from gravity_events import topics
from gravity_events.kafka import ChangeStreamReader, Envelope, ensure_topics
from gravity_events.settings import KafkaSettings


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[tuple[TansuBroker, KafkaSettings]]:
    """A broker of this test's own, since the test stops and resumes its process."""
    started = TansuBroker(log=tmp_path / "tansu.log")
    try:
        await started.wait_ready()
        settings = KafkaSettings(
            KAFKA_BOOTSTRAP_SERVERS=started.bootstrap_servers,
            KAFKA_ENABLE_IDEMPOTENCE=False,
            KAFKA_FETCH_MAX_WAIT_MS=10,
        )
        await ensure_topics(settings)
        yield started, settings
    finally:
        os.kill(started.process.pid, signal.SIGCONT)
        started.stop()


async def test_not_ready_while_the_broker_answers_nothing(broker: tuple[TansuBroker, KafkaSettings]) -> None:
    tansu, settings = broker
    events = [(f"sub-{i}", subscription_active("tenant_a", f"sub-{i}", "token")) for i in range(5)]
    await publish_events(settings, topics.SUBSCRIPTIONS, *events)
    applied: list[Envelope] = []
    reader = ChangeStreamReader(settings, topics=[topics.SUBSCRIPTIONS], apply=applied.append, client_id="t")
    await reader.start()
    # no fetch has been sent yet (start returns without yielding after the assignment): from here every
    # fetch goes unanswered, and polls time out empty
    os.kill(tansu.process.pid, signal.SIGSTOP)
    task = asyncio.create_task(reader.run())
    try:
        await eventually(lambda: reader.polls >= 5, timeout=10)
        # Ready only with everything applied. Almost always the broker stopped before the first fetch
        # reached it, so nothing is applied and the reader must not be ready; rarely the fetch was
        # answered first, and then it is ready with all five.
        assert reader.ready.is_set() == (len(applied) == 5), f"polls {reader.polls}, applied {len(applied)}"
        os.kill(tansu.process.pid, signal.SIGCONT)
        await asyncio.wait_for(reader.ready.wait(), 30)
        assert len(applied) == 5, "ready means every record there at start was applied"
    finally:
        reader.stop()
        await task
        await reader.close()


async def test_an_empty_stream_is_ready(broker: tuple[TansuBroker, KafkaSettings]) -> None:
    _, settings = broker
    reader = ChangeStreamReader(settings, topics=[topics.API_KEYS], apply=lambda _: None, client_id="t")
    await reader.start()
    task = asyncio.create_task(reader.run())
    try:
        await asyncio.wait_for(reader.ready.wait(), 30)
    finally:
        reader.stop()
        await task
        await reader.close()
