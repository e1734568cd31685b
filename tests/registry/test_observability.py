"""The registry's /metrics and trace context: a stored message is counted and timed, and its
``sms_inbound`` event continues the trace its raw record carried."""

from __future__ import annotations

import secrets

from prometheus_client.parser import text_string_to_metric_families
from tests.registry.conftest import Registry, feed, now_ms, raw, stored
from tests.support import TopicTail, eventually

from gravity_events import topics, tracing
from gravity_events.settings import KafkaSettings


async def _samples(registry: Registry) -> dict[str, float]:
    text = (await registry.client.get("/metrics")).text
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            totals[s.name] = totals.get(s.name, 0.0) + s.value
    return totals


async def test_a_stored_message_is_counted_timed_and_its_trace_continued(
    registry: Registry, kafka_settings: KafkaSettings
) -> None:
    tenant = await registry.tenant("observed")
    before = await _samples(registry)
    trace_id = secrets.token_hex(16)
    since = now_ms()
    with tracing.span(
        "ingest", parent=[("traceparent", f"00-{trace_id}-{secrets.token_hex(8)}-01".encode())]
    ):
        await feed(kafka_settings, raw(tenant["tenantId"]))
    await stored(registry, tenant, 1)

    async def counted() -> dict[str, float]:
        after = await _samples(registry)
        moved = after.get("gravity_registry_messages_stored_total", 0) > before.get(
            "gravity_registry_messages_stored_total", 0
        ) and after.get("gravity_registry_projection_seconds_count", 0) > before.get(
            "gravity_registry_projection_seconds_count", 0
        )
        return after if moved else {}

    after = await eventually(counted, timeout=10)
    assert "gravity_registry_outbox_depth" in after
    assert after.get("gravity_http_requests_total", 0) > 0

    async with TopicTail(kafka_settings, topics.SMS_INBOUND, since=since) as tail:

        async def published() -> list[dict[str, bytes]]:
            return [dict(r.headers) for r in await tail.poll() if r.key == tenant["tenantId"].encode()]

        [headers] = await eventually(published, timeout=15)
    traceparent = headers["traceparent"].decode()
    assert traceparent.split("-")[1] == trace_id, "sms_inbound continues the raw record's trace"
