"""Failure injection under steady load: every service is SIGKILLed in turn and restarted while RingCentral
keeps sending; one app endpoint fails for a while then recovers, one hangs. After the load, numbers:
every event answered 200 is stored exactly once, every (app, message) pair was delivered at least once,
WebSocket clients that resume with ``since`` have every message. Nothing may be lost.

Runs on the module's broker (memory engine) and a fresh database; the broker and PostgreSQL themselves
are stopped and restarted in ``test_infrastructure_restart.py``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from tests.chaos.harness import Chaos, Injection, chaos_run

from gravity_events.settings import KafkaSettings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(720)]

BROKER_FETCH_MAX_WAIT_MS = 25
"""The retry queue's first partition takes about four records a message here (the hanging app's deferred
first attempt and its first retry, the failing app's first retry, and what each kill re-reads): 12,400
for 3,000 messages, near the memory engine's fetch cliff at a 10 ms fetch wait. At 25 ms the broker lists
for longer before it gives up, and the partition limit grows with it (see ``tests/conftest.py``)."""


def _kill_each_service(chaos: Chaos) -> list[Injection]:
    at = {"ingest-1": 4.0, "registry-0": 10.0, "fanout-0": 16.0, "realtime-0": 22.0}
    return [Injection(t, f"SIGKILL {name}, restarted", chaos.restart(name)) for name, t in at.items()]


async def test_every_service_killed_in_turn_loses_nothing(
    kafka_settings: KafkaSettings,
    make_database: Callable[[], Awaitable[str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await chaos_run(
        infra_env={
            "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.kafka_bootstrap_servers,
            "KAFKA_SESSION_TIMEOUT_MS": str(kafka_settings.kafka_session_timeout_ms),
            "KAFKA_FETCH_MAX_WAIT_MS": str(kafka_settings.kafka_fetch_max_wait_ms),
            "DATABASE_URL": await make_database(),
        },
        logs=tmp_path,
        rate=100,
        duration=30.0,
        flaky_for=60.0,
        schedule=_kill_each_service,
        capsys=capsys,
    )
