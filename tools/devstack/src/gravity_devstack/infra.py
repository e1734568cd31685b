"""Where the broker and the database come from, in the project's order of precedence.

1. ``KAFKA_BOOTSTRAP_SERVERS`` / ``DATABASE_URL`` in the environment: used as they are;
2. testcontainers (``apache/kafka``, ``postgres``) when a Docker engine answers;
3. embedded: Tansu (memory engine, or S3 on SeaweedFS when ``durable``) and embedded PostgreSQL.

Each of the two is decided on its own, so a developer may point at a real Kafka and still get an
embedded database. Every Gravity topic is created before :func:`start_infra` returns.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gravity_events.kafka import ensure_topics
from gravity_events.settings import KafkaSettings

__all__ = ["DURABLE_FETCH_MAX_WAIT_MS", "DURABLE_SERVICE_ENV", "Infra", "docker_answers", "start_infra"]

log = logging.getLogger(__name__)


@dataclass
class Infra:
    """Addresses of a running broker and database, and how to stop what was started for them."""

    kafka_bootstrap_servers: str
    kafka_enable_idempotence: bool
    database_url: str
    kafka_source: str
    database_source: str
    kafka_fetch_max_wait_ms: int | None = None
    """Set for a broker that needs it: Tansu's S3 engine serves a fetch of cold data (after a restart) only
    if the fetch may wait long enough for the S3 read; at the 10 ms default a consumer behind the tail
    gets almost nothing (measured: 1 record in 6 s at 10 ms, 221 in 5 s at 500 ms).
    :data:`DURABLE_FETCH_MAX_WAIT_MS` is the value for it."""
    service_env: dict[str, str] = field(default_factory=dict)
    """Further service settings this broker calls for (see :data:`DURABLE_SERVICE_ENV`)."""
    _stoppers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def stop(self) -> None:
        """Stop everything this process started, last started first."""
        while self._stoppers:
            stopper = self._stoppers.pop()
            try:
                stopper()
            except Exception:
                log.exception("stopping infrastructure failed")

    def env(self) -> dict[str, str]:
        """The variables a service needs to reach this infrastructure."""
        return (
            {
                "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap_servers,
                "KAFKA_ENABLE_IDEMPOTENCE": "true" if self.kafka_enable_idempotence else "false",
                "DATABASE_URL": self.database_url,
            }
            | (
                {"KAFKA_FETCH_MAX_WAIT_MS": str(self.kafka_fetch_max_wait_ms)}
                if self.kafka_fetch_max_wait_ms is not None
                else {}
            )
            | self.service_env
        )


def docker_answers() -> bool:
    """True when a Docker engine answers ``docker info`` within 3 seconds."""
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(
            ["docker", "info"],  # noqa: S607
            capture_output=True,
            timeout=3,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _truthy(value: str | None, default: bool) -> bool:
    if value is None:
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


_TANSU_S3 = "embedded Tansu (S3 on SeaweedFS)"

DURABLE_FETCH_MAX_WAIT_MS = 100
"""The consumers' fetch wait on Tansu's S3 engine (ADR 0009, 0014). The broker answers a fetch of new data
at its next re-poll (half the remaining wait), so the wait is most of each hop's latency; it must still
leave room for the listing of a partition's batches that a fetch below the tail makes."""

DURABLE_SERVICE_ENV = {"GRAVITY_INGEST_RAW_PARTITIONING": "batch"}
"""Tansu's S3 engine writes each partition of a produce request as two objects, one partition after the
other: ingest sends each moment's raw records to one partition instead of hashing their ids over all 12
(ADR 0014)."""


def start_infra(*, data_dir: Path, durable: bool) -> Infra:
    """Start (or find) a broker and a database; create the topics; return their addresses."""
    data_dir.mkdir(parents=True, exist_ok=True)
    stoppers: list[Callable[[], None]] = []
    try:
        kafka, idempotence, kafka_source = _kafka(data_dir, durable, stoppers)
        durable_broker = kafka_source == _TANSU_S3
        fetch_wait = DURABLE_FETCH_MAX_WAIT_MS if durable_broker else None
        database_url, database_source = _database(data_dir, stoppers)
        settings = KafkaSettings(KAFKA_BOOTSTRAP_SERVERS=kafka, KAFKA_ENABLE_IDEMPOTENCE=idempotence)
        asyncio.run(ensure_topics(settings))
    except BaseException:
        for stopper in reversed(stoppers):
            stopper()
        raise
    return Infra(
        kafka,
        idempotence,
        database_url,
        kafka_source,
        database_source,
        kafka_fetch_max_wait_ms=fetch_wait,
        service_env=dict(DURABLE_SERVICE_ENV) if durable_broker else {},
        _stoppers=stoppers,
    )


def _kafka(data_dir: Path, durable: bool, stoppers: list[Callable[[], None]]) -> tuple[str, bool, str]:
    if address := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return address, _truthy(os.environ.get("KAFKA_ENABLE_IDEMPOTENCE"), True), "environment"
    if docker_answers():
        return _kafka_container(stoppers), True, "testcontainers (apache/kafka)"
    from gravity_devstack.kafka import TansuBroker

    s3_endpoint = None
    if durable:
        from gravity_devstack.seaweed import SeaweedS3

        seaweed = SeaweedS3(data_dir / "seaweedfs")
        stoppers.append(seaweed.stop)
        s3_endpoint = seaweed.endpoint
    cluster_id = None
    if s3_endpoint is not None:
        cluster_id = _repacked_cluster(data_dir, s3_endpoint)
    broker = TansuBroker(log=data_dir / "tansu.log", s3_endpoint=s3_endpoint, cluster_id=cluster_id)
    stoppers.append(broker.stop)
    asyncio.run(broker.wait_ready())
    return broker.bootstrap_servers, False, _TANSU_S3 if durable else "embedded Tansu (memory)"


KAFKA_IMAGE = "apache/kafka:3.9.1"


def kafka_container_env(advertised_port: int) -> dict[str, str]:
    """A single-node KRaft broker of the official image that clients reach on ``advertised_port``."""
    return {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{advertised_port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_MESSAGE_MAX_BYTES": str(4 * 1024 * 1024),
    }


def _kafka_container(stoppers: list[Callable[[], None]]) -> str:
    """The official ``apache/kafka`` image as a plain container.

    testcontainers' ``KafkaContainer`` expects Confluent images (``with_kraft()`` refuses others), so the
    official image is started directly: the advertised listener must name the host port, which is chosen
    before the start and bound to it.
    """
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    from gravity_devstack.kafka import free_port

    port = free_port()
    container = (
        DockerContainer(KAFKA_IMAGE)
        .with_envs(**kafka_container_env(port))
        .with_bind_ports(9092, port)
        .waiting_for(LogMessageWaitStrategy("Kafka Server started"))
    )
    container.start()
    stoppers.append(container.stop)
    return f"127.0.0.1:{port}"


def _repacked_cluster(data_dir: Path, s3_endpoint: str) -> str:
    """The cluster id to serve, after a repack when a partition has grown past the threshold (see
    :mod:`gravity_devstack.repack`). A failed repack leaves the data as it was and is not fatal."""
    from gravity_devstack.repack import current_cluster, repack

    try:
        repack(data_dir, s3_endpoint, say=lambda line: print(line, flush=True))
    except Exception:
        log.exception("repacking the broker failed; it keeps its data as it was")
    return current_cluster(data_dir)


def _database(data_dir: Path, stoppers: list[Callable[[], None]]) -> tuple[str, str]:
    if url := os.environ.get("DATABASE_URL"):
        return url, "environment"
    if docker_answers():
        from testcontainers.community.postgres import PostgresContainer

        container = PostgresContainer("postgres:17", driver=None)
        container.start()
        stoppers.append(container.stop)
        return container.get_connection_url(), "testcontainers (postgres)"
    from gravity_devstack.postgres import EmbeddedPostgres

    server = EmbeddedPostgres(data_dir / "postgres")
    stoppers.append(server.stop)
    return server.url, "embedded PostgreSQL"
