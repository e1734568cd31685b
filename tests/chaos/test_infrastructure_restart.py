"""Failure injection under steady load, the infrastructure's turn: the broker (Tansu on its durable S3
engine, SeaweedFS behind it) is stopped and started again, then PostgreSQL is, while RingCentral keeps
sending over two copies of every service; one app endpoint fails for a while then recovers, one hangs.
The same numbers as for the service kills: every event answered 200 stored exactly once, every (app,
message) pair delivered, WebSocket clients that resume with ``since`` have every message.

The test starts its own broker and database (the session's are shared and on the memory engine), on
fixed addresses, so the restarted servers are found where the services left them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from tests.chaos.harness import Chaos, Injection, chaos_run

from gravity_devstack.kafka import TansuBroker, free_port
from gravity_devstack.postgres import EmbeddedPostgres
from gravity_devstack.seaweed import SeaweedS3
from gravity_events.kafka import ensure_topics
from gravity_events.settings import KafkaSettings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(720)]

DOWN_FOR = 3.0  # seconds each server stays stopped


class Infrastructure:
    """A durable broker and a database that can each be stopped and started again in place."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.seaweed: SeaweedS3 | None = None
        self.broker: TansuBroker | None = None
        self.postgres: EmbeddedPostgres | None = None
        self._broker_port = free_port()

    async def start(self) -> None:
        self.seaweed = await asyncio.to_thread(SeaweedS3, self.root / "seaweedfs")
        await self._start_broker()
        await ensure_topics(KafkaSettings(KAFKA_BOOTSTRAP_SERVERS=self._broker().bootstrap_servers))
        self.postgres = await asyncio.to_thread(EmbeddedPostgres, self.root / "postgres")

    async def stop(self) -> None:
        for server in (self.postgres, self.broker, self.seaweed):
            if server is not None:
                await asyncio.to_thread(server.stop)

    def _broker(self) -> TansuBroker:
        assert self.broker is not None
        return self.broker

    def _postgres(self) -> EmbeddedPostgres:
        assert self.postgres is not None
        return self.postgres

    @property
    def env(self) -> dict[str, str]:
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self._broker().bootstrap_servers,
            "KAFKA_SESSION_TIMEOUT_MS": "3000",
            # as make run sets for the S3 engine: at 10 ms a consumer behind the tail after the restart
            # gets almost nothing, because Tansu's S3 read of cold data outlasts the fetch's wait
            "KAFKA_FETCH_MAX_WAIT_MS": "500",
            "DATABASE_URL": self._postgres().url,
        }

    async def _start_broker(self) -> None:
        assert self.seaweed is not None
        self.broker = await asyncio.to_thread(
            TansuBroker,
            log=self.root / "tansu.log",
            port=self._broker_port,
            s3_endpoint=self.seaweed.endpoint,
        )
        await self.broker.wait_ready()

    async def restart_broker(self) -> None:
        await asyncio.to_thread(self._broker().stop)  # SIGTERM
        self.broker = None
        await asyncio.sleep(DOWN_FOR)
        await self._start_broker()

    async def restart_postgres(self) -> None:
        url = self._postgres().url
        await asyncio.to_thread(self._postgres().stop)  # pg_ctl stop: fast shutdown, clients cut off
        self.postgres = None
        await asyncio.sleep(DOWN_FOR)
        self.postgres = await asyncio.to_thread(EmbeddedPostgres, self.root / "postgres")
        assert self.postgres.url == url  # the same socket: the services reconnect where they were


@pytest.fixture
async def infrastructure(tmp_path: Path) -> AsyncIterator[Infrastructure]:
    infra = Infrastructure(tmp_path)
    try:
        await infra.start()
        yield infra
    finally:
        await infra.stop()


def _restart_broker_then_postgres(infra: Infrastructure) -> Iterator[Injection]:
    yield Injection(
        4.0, f"broker (Tansu, S3 engine) stopped, restarted after {DOWN_FOR:.0f} s", infra.restart_broker
    )
    yield Injection(16.0, f"PostgreSQL stopped, restarted after {DOWN_FOR:.0f} s", infra.restart_postgres)


async def test_broker_and_database_restarts_lose_nothing(
    infrastructure: Infrastructure, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def schedule(chaos: Chaos) -> list[Injection]:
        return list(_restart_broker_then_postgres(infrastructure))

    await chaos_run(
        infra_env=infrastructure.env,
        logs=tmp_path / "logs",
        rate=100,
        duration=30.0,
        flaky_for=60.0,
        schedule=schedule,
        capsys=capsys,
    )
