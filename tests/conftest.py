"""Session infrastructure: a real Kafka-protocol broker and a real PostgreSQL, started once.

Where they come from (gravity_devstack.infra.start_infra): addresses in the environment
(KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL) → testcontainers where a Docker engine answers → the embedded
Tansu broker (memory engine, for speed) and embedded PostgreSQL in a temporary folder.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from gravity_events.settings import KafkaSettings

if TYPE_CHECKING:
    from gravity_devstack.infra import Infra


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    """The broker and database every test of the session shares."""
    from gravity_devstack.infra import start_infra  # the dev tools are imported only when needed

    started = start_infra(data_dir=tmp_path_factory.mktemp("infra"), durable=False)
    try:
        yield started
        _PARTITION_REPORT.extend(asyncio.run(_largest_partitions(started.kafka_bootstrap_servers)))
    finally:
        started.stop()


_PARTITION_REPORT: list[str] = []


async def _largest_partitions(bootstrap: str, top: int = 8) -> list[str]:
    """The session broker's fullest partitions: the embedded broker's fetch cost grows with a partition's
    record batches (each fetch lists them), so this is what to look at when late tests slow down."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [
            TopicPartition(topic, p)
            for topic in await consumer.topics()
            for p in consumer.partitions_for_topic(topic) or ()
        ]
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    fullest = sorted(((tp, end) for tp, end in ends.items() if end), key=lambda item: -item[1])[:top]
    return [f"{tp.topic}[{tp.partition}]: {end} records" for tp, end in fullest]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """After the run: the fullest partitions of the session broker (see ``_largest_partitions``)."""
    if _PARTITION_REPORT:
        terminalreporter.section("fullest partitions on the session broker")
        for line in _PARTITION_REPORT:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def kafka_settings(infra: Infra) -> KafkaSettings:
    """Broker settings with every Gravity topic already created."""
    return KafkaSettings(
        KAFKA_BOOTSTRAP_SERVERS=infra.kafka_bootstrap_servers,
        KAFKA_ENABLE_IDEMPOTENCE=infra.kafka_enable_idempotence,
        KAFKA_FETCH_MAX_WAIT_MS=10,
        KAFKA_SESSION_TIMEOUT_MS=3_000,  # group joins answer in 1.5 s on Tansu
    )


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@pytest.fixture(scope="session")
async def make_database(infra: Infra) -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """A factory of fresh, empty databases on the session's server; all dropped at the end."""
    created: list[str] = []

    async def create() -> str:
        name = "gravity_test_" + secrets.token_hex(6)
        conn = await asyncpg.connect(infra.database_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        created.append(name)
        return _with_database(infra.database_url, name)

    yield create
    conn = await asyncpg.connect(infra.database_url)
    try:
        for name in created:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def database_url(make_database: Callable[[], Awaitable[str]]) -> str:
    """One fresh database for the session."""
    return await make_database()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout's top folder."""
    return Path(__file__).resolve().parents[1]
