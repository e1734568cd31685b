"""Realtime's /metrics: open sockets, frames sent and why clients were closed, in the Prometheus format."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.realtime.harness import Registry, hello, next_frames, realtime_settings, running_realtime
from tests.support import eventually

from gravity_events.settings import KafkaSettings


@pytest.fixture(scope="module")
async def registry(
    kafka_settings: KafkaSettings, make_database: Callable[[], Awaitable[str]]
) -> AsyncIterator[Registry]:
    async with Registry.running(kafka_settings, make_database) as registry:
        yield registry


async def _samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_connections_frames_and_closes_are_counted(registry: Registry) -> None:
    tenant = await registry.tenant()
    async with running_realtime(realtime_settings(registry.kafka, registry.url)) as (_app, port):
        url = f"ws://127.0.0.1:{port}/v1/ws"

        async def connected() -> Any:
            try:
                return await hello(url, tenant["apiKey"])
            except Exception:
                return None

        ws = await eventually(connected, timeout=15)
        assert (await _samples(port))[("gravity_realtime_connections", ())] == 1
        await registry.send_sms(tenant["tenantId"])
        await next_frames(ws, 1)

        async def frames_counted() -> bool:
            return (await _samples(port)).get(("gravity_realtime_frames_sent_total", ()), 0) >= 1

        await eventually(frames_counted, timeout=10)
        await ws.close()

        async def closed_counted() -> bool:
            samples = await _samples(port)
            return (
                samples.get(("gravity_realtime_clients_closed_total", (("reason", "client"),)), 0) == 1
                and samples[("gravity_realtime_connections", ())] == 0
            )

        await eventually(closed_counted, timeout=10)
        samples = await _samples(port)
        assert any(name == "gravity_http_requests_total" for name, _ in samples)
