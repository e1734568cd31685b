"""Session infrastructure and the suite's safety nets.

Where the broker and the database come from (gravity_devstack.infra.start_infra): addresses in the
environment (KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL) → testcontainers where a Docker engine answers → the
embedded Tansu broker (memory engine) and embedded PostgreSQL in a temporary folder.

On the embedded broker every test module gets a broker of its own (``kafka_settings`` is module-scoped):
Tansu lists every record batch of a partition on each fetch and gives up at the fetch deadline, so one
broker shared by the whole session grows partitions towards the size where fetches answer nothing. A real
Kafka (environment or testcontainers) is shared, since it has no such cliff. The database is shared by the
session; tests that need isolation take a fresh one from ``make_database``.

Safety nets:
- ``pytest-timeout`` fails a test that overruns, and ``tests.watchdog`` ends the run when a test or the
  session runs far past its limit (see that module for why both).
- The partition report: the fullest partitions each module's broker reached, printed after the run; a
  partition past ``GRAVITY_TEST_PARTITION_LIMIT`` records (scaled by the module's fetch wait) fails the
  session.

A module whose load fills a partition past that limit by design sets ``BROKER_FETCH_MAX_WAIT_MS`` (default
10): its broker settings carry that fetch wait, and its limit grows in proportion, since the broker lists a
partition's batches for up to the fetch wait before it gives up.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from gravity_events.kafka import ensure_topics
from gravity_events.settings import KafkaSettings
from tests.support.brokers import broker_overrides

if TYPE_CHECKING:
    from gravity_devstack.infra import Infra

pytest_plugins = ["tests.watchdog"]

PARTITION_LIMIT = int(os.environ.get("GRAVITY_TEST_PARTITION_LIMIT", "12000"))
"""Records one partition of a test broker may reach; Tansu's memory engine stops answering fetches of a
partition of single-record batches somewhere past 15,000 at a 10 ms fetch wait (about 0.5 µs a batch listed,
for at most the fetch wait)."""

FETCH_MAX_WAIT_MS = 10
"""The test brokers' fetch wait, unless a module sets ``BROKER_FETCH_MAX_WAIT_MS``."""


# --- infrastructure ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    """The database every test of the session shares, and the broker when it is a real Kafka."""
    from gravity_devstack.infra import start_infra  # the dev tools are imported only when needed

    started = start_infra(data_dir=tmp_path_factory.mktemp("infra"), durable=False)
    try:
        yield started
    finally:
        started.stop()


_PARTITION_REPORT: list[tuple[int, int, str]] = []
"""(records, the module's limit, where) of every module's fullest partitions."""


async def _fullest_partitions(bootstrap: str, top: int = 3) -> list[tuple[TopicPartition, int]]:
    """A broker's fullest non-empty partitions, by the fetch response's high watermark (Tansu's
    ListOffsets answer is unreliable; a fetch's high watermark is not)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10)
    await consumer.start()
    try:
        tps = [
            TopicPartition(topic, p)
            for topic in await consumer.topics()
            for p in consumer.partitions_for_topic(topic) or ()
        ]
        ends = await consumer.end_offsets(tps)
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, max(ends[tp] - 1, 0))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(consumer.highwater(tp) is None for tp in tps):
            await consumer.getmany(timeout_ms=100)
        sizes = {tp: max(ends[tp], consumer.highwater(tp) or 0) for tp in tps}
    finally:
        await consumer.stop()
    return sorted(((tp, n) for tp, n in sizes.items() if n), key=lambda item: -item[1])[:top]


@pytest.fixture(scope="module")
async def kafka_settings(
    infra: Infra, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[KafkaSettings]:
    """Broker settings with every Gravity topic created: this module's own embedded broker, or the
    session's real Kafka."""
    extra = broker_overrides(infra.kafka_source)  # tests/deploy/test_kafka_timeouts.py checks these
    if not infra.kafka_source.startswith("embedded Tansu"):
        yield KafkaSettings(
            KAFKA_BOOTSTRAP_SERVERS=infra.kafka_bootstrap_servers,
            KAFKA_ENABLE_IDEMPOTENCE=infra.kafka_enable_idempotence,
            KAFKA_FETCH_MAX_WAIT_MS=10,
            **extra,
        )
        return
    from gravity_devstack.kafka import TansuBroker

    fetch_wait = int(getattr(request.module, "BROKER_FETCH_MAX_WAIT_MS", FETCH_MAX_WAIT_MS))
    limit = PARTITION_LIMIT * fetch_wait // FETCH_MAX_WAIT_MS
    broker = TansuBroker(log=tmp_path_factory.mktemp("broker") / "tansu.log")
    try:
        await broker.wait_ready()
        settings = KafkaSettings(
            KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers,
            KAFKA_ENABLE_IDEMPOTENCE=False,
            KAFKA_FETCH_MAX_WAIT_MS=fetch_wait,
            **extra,
        )
        await ensure_topics(settings)
        yield settings
        for tp, size in await _fullest_partitions(broker.bootstrap_servers):
            _PARTITION_REPORT.append((size, limit, f"{request.module.__name__}: {tp.topic}[{tp.partition}]"))
    finally:
        broker.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """After the run: the fullest partitions any module's broker reached."""
    if not _PARTITION_REPORT:
        return
    terminalreporter.section("fullest partitions of the test brokers")
    for size, _, where in sorted(_PARTITION_REPORT, reverse=True)[:8]:
        terminalreporter.write_line(f"{where}: {size} records")
    for size, limit, where in _PARTITION_REPORT:
        if size <= limit:
            continue
        terminalreporter.write_line(
            f"FAILED: {where} holds {size} records, past the limit of {limit}: this module "
            "approaches the embedded broker's fetch cliff; split it or give its heavy test a broker of its own",
            red=True,
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if exitstatus == 0 and any(size > limit for size, limit, _ in _PARTITION_REPORT):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# --- databases --------------------------------------------------------------------------------------


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
