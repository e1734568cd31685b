"""Consumer-group session timeouts an Apache Kafka broker accepts.

A broker answers a JoinGroup whose session timeout lies outside [group.min.session.timeout.ms,
group.max.session.timeout.ms] with INVALID_SESSION_TIMEOUT, so a consumer configured outside that range
never joins its group: it passes on the embedded Tansu broker (which has no such bounds) and fails only
against a real Kafka. This reads every place a session timeout can come from (the settings' default,
docker-compose.yml, the Kubernetes manifests, the devstack and the test suite's own overrides) and checks
each against the bounds of the brokers the project runs, without starting one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.brokers import broker_overrides

from gravity_devstack.infra import Infra, kafka_container_env
from gravity_events.kafka import EventConsumer
from gravity_events.settings import KafkaSettings
from gravity_fanout.settings import Settings as FanoutSettings
from gravity_fanout.windows import WindowedConsumer

KEY = "KAFKA_SESSION_TIMEOUT_MS"
# Apache Kafka's broker defaults; a broker's own environment may move them (see _bounds)
KAFKA_MIN_SESSION_TIMEOUT_MS = 6_000
KAFKA_MAX_SESSION_TIMEOUT_MS = 1_800_000
# the kinds gravity_devstack.infra reports for a real Kafka: addresses from the environment, or a
# testcontainers broker
REAL_KAFKA_KINDS = ("environment", "testcontainers (apache/kafka)")
DEFAULT = KafkaSettings.model_fields["kafka_session_timeout_ms"].default


def _bounds(broker_env: dict[str, Any]) -> tuple[int, int]:
    """The session-timeout range of an apache/kafka container: its image maps KAFKA_GROUP_* variables
    onto group.* broker settings, and the defaults apply where they are absent."""
    return (
        int(broker_env.get("KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS", KAFKA_MIN_SESSION_TIMEOUT_MS)),
        int(broker_env.get("KAFKA_GROUP_MAX_SESSION_TIMEOUT_MS", KAFKA_MAX_SESSION_TIMEOUT_MS)),
    )


def _assert_accepted(value: object, where: str, bounds: tuple[int, int] | None = None) -> None:
    low, high = bounds or (KAFKA_MIN_SESSION_TIMEOUT_MS, KAFKA_MAX_SESSION_TIMEOUT_MS)
    assert low <= int(str(value)) <= high, f"{where}: {KEY}={value} is outside Kafka's [{low}, {high}]"


def _environment(service: dict[str, Any]) -> dict[str, Any]:
    """A compose service's environment, in either of the spec's forms (mapping or KEY=VALUE list)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return dict(env)


@pytest.fixture(autouse=True)
def _no_session_timeout_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # the settings read the environment; the checks are about the code's and the files' values
    monkeypatch.delenv(KEY, raising=False)


def test_the_default_session_timeout_is_one_kafka_accepts() -> None:
    _assert_accepted(DEFAULT, "KafkaSettings default")
    _assert_accepted(KafkaSettings().kafka_session_timeout_ms, "KafkaSettings()")


def _session_timeouts() -> Iterator[int]:
    yield DEFAULT
    for kind in (*REAL_KAFKA_KINDS, "embedded Tansu (memory)"):
        yield KafkaSettings(**broker_overrides(kind)).kafka_session_timeout_ms


class _Windowed(WindowedConsumer):
    """The fanout's consumer base with nothing to do: only its construction is looked at."""

    async def _start_position(self, tp: object) -> int:
        return 0

    async def _handle(self, *_: object) -> None:
        return None


@pytest.mark.parametrize("session_timeout", sorted(set(_session_timeouts())))
async def test_every_consumer_heartbeats_at_least_three_times_a_session(session_timeout: int) -> None:
    # Kafka's guidance: heartbeat.interval.ms no higher than a third of session.timeout.ms, so a member
    # survives two lost heartbeats; the consumers derive it from the session timeout. The real aiokafka
    # consumers are built (never started: no broker is asked) and their settings read back.
    settings = KafkaSettings(KAFKA_SESSION_TIMEOUT_MS=session_timeout)

    async def handler(*_: object) -> None:
        return None

    # the producer is only used once a batch arrives
    events = EventConsumer(
        settings, topics=["t"], group_id="g", handler=handler, producer=None, client_id="c"
    )
    fanout = _Windowed(
        FanoutSettings(KAFKA_SESSION_TIMEOUT_MS=session_timeout), topic="t", group_id="g", max_records=1
    )
    consumers = [events._consumer, fanout._consumer]
    try:
        for consumer in consumers:
            assert consumer._session_timeout_ms == session_timeout
            assert 0 < 3 * consumer._heartbeat_interval_ms <= consumer._session_timeout_ms
    finally:
        for consumer in consumers:
            await consumer.stop()


def test_compose_services_use_session_timeouts_its_kafka_accepts(repo_root: Path) -> None:
    compose = yaml.safe_load((repo_root / "docker-compose.yml").read_text())
    services = compose["services"]
    bounds = _bounds(_environment(services["kafka"]))
    assert bounds[0] <= bounds[1], f"the compose broker's session-timeout range is empty: {bounds}"
    clients = {
        name: _environment(service)
        for name, service in services.items()
        if "KAFKA_BOOTSTRAP_SERVERS" in _environment(service)
    }
    assert {"registry", "ingest", "fanout", "realtime", "topics"} <= clients.keys()
    for name, env in clients.items():
        # absent: the settings' default is what the service sends
        _assert_accepted(env.get(KEY, DEFAULT), f"docker-compose.yml {name}", bounds)


def _kubernetes_values(root: Path) -> Iterator[tuple[str, str]]:
    """Every KAFKA_SESSION_TIMEOUT_MS the Kubernetes config sets: env files behind configMapGenerators,
    and env entries or ConfigMap data in any manifest or patch."""
    for path in sorted(root.rglob("*.env")):
        for line in path.read_text().splitlines():
            name, _, value = line.strip().partition("=")
            if name == KEY:
                yield str(path.relative_to(root)), value
    for path in sorted(root.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            yield from ((str(path.relative_to(root)), value) for value in _values_in(doc))


def _values_in(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        if node.get("name") == KEY and "value" in node:
            yield str(node["value"])
        if KEY in node:
            yield str(node[KEY])
        for child in node.values():
            yield from _values_in(child)
    elif isinstance(node, list):
        for child in node:
            yield from _values_in(child)


def test_kubernetes_config_uses_session_timeouts_kafka_accepts(repo_root: Path) -> None:
    root = repo_root / "deploy" / "kubernetes"
    assert (root / "base" / "config.env").is_file(), "the services' configuration moved; follow it here"
    # none set means every pod sends the default, checked above
    for where, value in _kubernetes_values(root):
        _assert_accepted(value, f"deploy/kubernetes/{where}")


def test_the_devstack_and_its_kafka_container_agree_on_session_timeouts() -> None:
    bounds = _bounds(kafka_container_env(9092))
    for kind in (*REAL_KAFKA_KINDS, "embedded Tansu (memory)"):
        env = Infra("127.0.0.1:9092", True, "postgresql://localhost/gravity", kind, "environment").env()
        # the services the devstack starts get what env() holds, else the settings' default
        _assert_accepted(env.get(KEY, DEFAULT), f"devstack env() for {kind}", bounds)


@pytest.mark.parametrize("kind", REAL_KAFKA_KINDS)
def test_the_suite_sends_a_real_kafka_a_session_timeout_it_accepts(kind: str) -> None:
    # what tests/conftest.py's kafka_settings builds for a real Kafka
    overrides = broker_overrides(kind)
    _assert_accepted(
        KafkaSettings(**overrides).kafka_session_timeout_ms, f"test settings for {kind}", _bounds({})
    )
