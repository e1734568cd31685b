"""Fanout's telemetry: ``/metrics`` counts attempts, and the webhook POST carries the message's trace."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families
from tests.fanout.conftest import World, fanout_settings, running_fanout, sms
from tests.support import eventually, running_receiver

from gravity_events import topics
from gravity_events.kafka import make_producer, publish
from gravity_events.settings import KafkaSettings

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples called ``name`` in a Prometheus exposition, by their sorted labels."""
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


async def test_metrics_count_the_attempt_and_the_post_carries_the_trace(
    kafka_settings: KafkaSettings, world: World
) -> None:
    settings = fanout_settings(kafka_settings)
    async with running_receiver() as receiver, running_fanout(settings) as app:
        await world.app(receiver.url("/hook"))
        traced, untraced = sms(world.tenant_id, "traced"), sms(world.tenant_id, "untraced")
        producer = make_producer(kafka_settings, client_id="tests")
        await producer.start()
        try:
            await publish(
                producer,
                topics.SMS_INBOUND,
                traced,
                key=world.tenant_id,
                extra_headers=[("traceparent", TRACEPARENT.encode())],
            )
            await publish(producer, topics.SMS_INBOUND, untraced, key=world.tenant_id)
        finally:
            await producer.stop()
        requests = await eventually(
            lambda: len(receiver.received("/hook")) >= 2 and receiver.received("/hook")
        )
        by_id = {r.headers["webhook-id"]: r for r in requests}

        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://fanout"
        ) as client:

            async def scraped() -> str:
                answer = await client.get("/metrics")
                assert answer.status_code == 200
                attempts = samples(answer.text, "gravity_fanout_attempts_total")
                return answer.text if attempts.get((("outcome", "success"),), 0) >= 2 else ""

            text = await eventually(scraped, timeout=10)
    assert by_id[traced.message_id].headers["traceparent"] == TRACEPARENT
    assert "traceparent" not in by_id[untraced.message_id].headers
    assert samples(text, "gravity_fanout_attempts_total")[(("outcome", "timeout"),)] == 0
    assert samples(text, "gravity_fanout_attempt_seconds_count")[()] >= 2
    assert samples(text, "gravity_fanout_in_flight")[()] == 0
    lag_groups = {dict(labels)["group"] for labels in samples(text, "gravity_kafka_consumer_lag")}
    assert settings.consumer_group in lag_groups
