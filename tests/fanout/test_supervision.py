"""A fanout loop that dies while the service runs is not left behind: it is logged with its traceback,
``/readyz`` turns 503 naming it, and the process is told to exit (``gravity_service.serve`` then exits
non-zero, so the process supervisor restarts the copy)."""

from __future__ import annotations

import logging

import httpx
import pytest
from tests.fanout.conftest import fanout_settings, running_fanout
from tests.support import eventually

from gravity_events.settings import KafkaSettings
from gravity_service import on_task_failure


async def test_a_dead_consumer_is_logged_turns_readiness_503_and_asks_for_exit(
    kafka_settings: KafkaSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="gravity_service")
    failed: list[str] = []
    with on_task_failure(failed.append):
        async with running_fanout(fanout_settings(kafka_settings)) as app:
            transport = httpx.ASGITransport(app)
            async with httpx.AsyncClient(transport=transport, base_url="http://fanout") as http:
                ready = await http.get("/readyz")
                assert (ready.status_code, ready.json()) == (200, {"status": "ok"})

                # The manual-requests consumer's Kafka client goes away under its running loop: the next fetch
                # raises.
                await app.state.requests.close()

                await eventually(lambda: failed == ["requests"], timeout=10)
                ready = await http.get("/readyz")
                assert ready.status_code == 503
                assert ready.json() == {
                    "status": "unavailable",
                    "checks": {"apps": "ok", "consumers": "ok", "requests": "failed: ConsumerStoppedError"},
                }
                assert (await http.get("/healthz")).status_code == 200
    [logged] = [r for r in caplog.records if r.getMessage() == "supervised task 'requests' failed"]
    assert logged.exc_info is not None and logged.exc_info[0] is not None
    assert logged.exc_info[0].__name__ == "ConsumerStoppedError"
