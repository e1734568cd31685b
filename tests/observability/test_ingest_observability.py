"""One SMS through a real ingest on this module's broker: its metrics, its trace context on the raw
record, its spans at an OTLP receiver, its JSON log lines, and the consumer lag helper."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager
from prometheus_client.core import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from tests.support import (
    TopicTail,
    eventually,
    notification,
    publish_events,
    serve,
    subscription_active,
    wait_ready,
)
from tests.support.otlp import OtlpReceiver
from tests.support.servers import free_port

from gravity_events import ids, topics, tracing
from gravity_events.codec import encode
from gravity_events.kafka import ConsumerLag, Envelope, EventConsumer, make_producer
from gravity_events.settings import KafkaSettings
from gravity_ingest.app import create_app
from gravity_ingest.settings import Settings

URL = "/v1/webhooks/ringcentral"
RENEWAL_REMINDER = "/restapi/v1.0/subscription/~?threshold=60&interval=15"
MESSAGE_ID = re.compile(r"msg_[0-9a-f]{12}")


def _settings(kafka: KafkaSettings) -> Settings:
    return Settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka.kafka_bootstrap_servers,
        KAFKA_ENABLE_IDEMPOTENCE=kafka.kafka_enable_idempotence,
    )


def _traceparent() -> tuple[str, str]:
    trace_id = secrets.token_hex(16)
    return trace_id, f"00-{trace_id}-{secrets.token_hex(8)}-01"


async def _subscribe(kafka: KafkaSettings, c: httpx.AsyncClient) -> tuple[str, str, str]:
    """A subscription published the way the registry does, once the running ingest accepts it."""
    tenant, sub, token = ids.new_tenant_id(), "sub-" + secrets.token_hex(6), secrets.token_urlsafe(32)
    await publish_events(kafka, topics.SUBSCRIPTIONS, (sub, subscription_active(tenant, sub, token)))
    probe = notification(sub)
    probe["event"] = RENEWAL_REMINDER

    async def accepted() -> bool:
        r = await c.post(URL, content=orjson.dumps(probe), headers={"Verification-Token": token})
        return r.status_code == 200

    await eventually(accepted, timeout=15)
    return tenant, sub, token


def _samples(text: str) -> list[Any]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def _value(text: str, name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in _samples(text)
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def _raw_record(kafka: KafkaSettings, rc_id: str, since: int) -> Any:
    async with TopicTail(kafka, topics.RC_RAW, since=since) as tail:

        async def found() -> Any:
            return next((r for r in await tail.poll() if r.key == rc_id.encode()), None)

        return await eventually(found, timeout=15)


@pytest.fixture
async def ingest(kafka_settings: KafkaSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(_settings(kafka_settings))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as c:
            await wait_ready(client=c, timeout=15)
            yield c


async def test_one_sms_moves_the_counters_and_labels_carry_no_ids(
    kafka_settings: KafkaSettings, ingest: httpx.AsyncClient
) -> None:
    tenant, sub, token = await _subscribe(kafka_settings, ingest)
    before = (await ingest.get("/metrics")).text
    n = notification(sub)
    rc_id = n["body"]["id"]
    r = await ingest.post(URL, content=orjson.dumps(n), headers={"Verification-Token": token})
    assert r.status_code == 200
    assert (
        await ingest.post(URL, content=orjson.dumps(n), headers={"Verification-Token": "wrong"})
    ).status_code == 401
    assert (await ingest.post(URL, headers={"Validation-Token": "hello"})).status_code == 200
    assert (await ingest.post(URL, content=b"{not json")).status_code == 400
    assert (await ingest.get("/v1/unknown/" + rc_id)).status_code == 404

    response = await ingest.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    after = response.text
    for outcome in ("accepted", "unauthorized", "handshake", "invalid"):
        moved = _value(after, "gravity_ingest_notifications_total", outcome=outcome) - _value(
            before, "gravity_ingest_notifications_total", outcome=outcome
        )
        assert moved == 1, outcome
    assert (
        _value(after, "gravity_ingest_append_seconds_count")
        - _value(before, "gravity_ingest_append_seconds_count")
        == 1
    )
    webhook = {"route": URL, "method": "POST"}
    assert _value(after, "gravity_http_requests_total", **webhook, status="200") >= 3
    assert _value(after, "gravity_http_requests_total", **webhook, status="401") >= 1
    assert _value(after, "gravity_http_request_seconds_count", **webhook) >= 5
    assert _value(after, "gravity_http_requests_total", route="unmatched", status="404") == 1
    # The subscription reader has fetched its partition, so its lag is known: caught up.
    lag = [s for s in _samples(after) if s.name == "gravity_kafka_consumer_lag"]
    assert [(s.labels["group"], s.labels["topic"], s.value) for s in lag] == [
        ("gravity-ingest", topics.SUBSCRIPTIONS, 0)
    ]

    values = {v for s in _samples(after) for v in s.labels.values()}
    assert not [v for v in values if MESSAGE_ID.search(v)]
    assert not values & {rc_id, token, sub, tenant, ids.message_id_for(tenant, rc_id)}


async def test_a_traceparent_on_the_request_is_carried_on_the_raw_record(
    kafka_settings: KafkaSettings, ingest: httpx.AsyncClient
) -> None:
    """Pass-through: this process records no spans, yet the record continues the caller's trace."""
    assert not tracing.recording()
    _, sub, token = await _subscribe(kafka_settings, ingest)
    _, traceparent = _traceparent()
    n, plain = notification(sub), notification(sub)
    since = int(time.time() * 1000) - 1000
    headers = {"Verification-Token": token, "traceparent": traceparent, "tracestate": "vendor=x"}
    assert (await ingest.post(URL, content=orjson.dumps(n), headers=headers)).status_code == 200
    assert (
        await ingest.post(URL, content=orjson.dumps(plain), headers={"Verification-Token": token})
    ).status_code == 200

    record = await _raw_record(kafka_settings, n["body"]["id"], since)
    carried = dict(record.headers)
    assert carried["traceparent"].decode() == traceparent
    assert carried["tracestate"] == b"vendor=x"
    assert carried["gravity-type"] == b"rc_notification"
    untraced = await _raw_record(kafka_settings, plain["body"]["id"], since)
    assert "traceparent" not in dict(untraced.headers)


async def test_consumer_lag_is_the_records_behind_the_high_watermark(kafka_settings: KafkaSettings) -> None:
    """A consumer caught up reports 0; holding the first of five new records, 4 behind; then 0 again.

    The high watermark is the last fetch response's: the five arrive in one fetch while the handler holds
    the first, so the lag stays exact while it is stuck.
    """
    tenant = ids.new_tenant_id()
    key = "sub-" + secrets.token_hex(6)
    release = asyncio.Event()
    held: list[Envelope] = []

    async def handler(batch: list[Envelope]) -> None:
        if any(e.key == key for e in batch):
            held.extend(batch)
            await release.wait()

    producer = make_producer(kafka_settings, client_id="tests-lag", linger_ms=50)
    await producer.start()
    consumer = EventConsumer(
        kafka_settings,
        topics=[topics.SUBSCRIPTIONS],
        group_id="tests-lag-" + secrets.token_hex(4),
        handler=handler,
        producer=producer,
        client_id="tests-lag",
        max_records=1,
    )
    lag = ConsumerLag()
    registry = CollectorRegistry()
    registry.register(lag)
    lag.track(consumer)

    def samples() -> list[Any]:
        return [s for m in registry.collect() for s in m.samples]

    try:
        await consumer.start()
        task = asyncio.create_task(consumer.run())
        await asyncio.wait_for(consumer.caught_up.wait(), 30)
        assert await eventually(lambda: [s.value for s in samples()] == [0], timeout=20)
        # sent together, so they land in one record batch and the consumer fetches all five at once
        events = [subscription_active(tenant, key, secrets.token_hex(4)) for _ in range(5)]
        sent = [await producer.send(topics.SUBSCRIPTIONS, encode(e), key=key.encode()) for e in events]
        await asyncio.gather(*sent)
        await eventually(lambda: held, timeout=20)
        assert await eventually(lambda: [s.value for s in samples()] == [4], timeout=20)
        (sample,) = samples()
        assert sample.labels == {"group": consumer.lag_group, "topic": topics.SUBSCRIPTIONS, "partition": "0"}
        release.set()
        assert await eventually(lambda: [s.value for s in samples()] == [0], timeout=20)
        consumer.stop()
        await asyncio.wait_for(task, 20)
    finally:
        release.set()
        await consumer.close()
        await producer.stop()
    assert samples() == []  # a closed consumer reports nothing


# -- a real ingest process: OTLP export and JSON logs ----------------------------------------------


async def test_a_real_ingest_exports_its_spans_and_logs_json_with_the_ids(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    receiver = OtlpReceiver()
    async with serve(receiver.app) as otlp_port:
        port, log = free_port(), tmp_path / "ingest.log"
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.kafka_bootstrap_servers,
            "KAFKA_ENABLE_IDEMPOTENCE": str(kafka_settings.kafka_enable_idempotence).lower(),
            "KAFKA_FETCH_MAX_WAIT_MS": "10",
            "GRAVITY_INGEST_PORT": str(port),
            "GRAVITY_LOG_FORMAT": "json",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "gravity_ingest"], env=env, stdout=out, stderr=out)
        try:
            base = f"http://127.0.0.1:{port}"
            await wait_ready(base, proc=proc, log=log, timeout=60)
            async with httpx.AsyncClient(base_url=base, timeout=10) as c:
                tenant, sub, token = await _subscribe(kafka_settings, c)
                trace_id, traceparent = _traceparent()
                n = notification(sub)
                rc_id = n["body"]["id"]
                since = int(time.time() * 1000) - 1000
                r = await c.post(
                    URL,
                    content=orjson.dumps(n),
                    headers={"Verification-Token": token, "traceparent": traceparent},
                )
                assert r.status_code == 200
            spans = await eventually(
                lambda: len(receiver.of_trace(trace_id)) >= 2 and receiver.of_trace(trace_id), timeout=20
            )
            record = await _raw_record(kafka_settings, rc_id, since)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    by_name = {s.name: (resource, s) for resource, s in spans}
    assert set(by_name) >= {f"POST {URL}", f"{topics.RC_RAW} publish"}, sorted(by_name)
    resource, server = by_name[f"POST {URL}"]
    _, append = by_name[f"{topics.RC_RAW} publish"]
    assert resource["service.name"] == "gravity-ingest"
    assert server.parent_span_id.hex() == traceparent.split("-")[2]  # continued the caller's trace
    assert append.parent_span_id == server.span_id
    # The raw record names the append span as its parent: the registry continues from there.
    assert dict(record.headers)["traceparent"].decode() == f"00-{trace_id}-{append.span_id.hex()}-01"

    lines = [line for line in log.read_text().splitlines() if line.strip()]
    parsed = [orjson.loads(line) for line in lines]  # every line on stderr is one JSON object
    assert all({"ts", "level", "service", "message"} <= set(p) for p in parsed), lines
    assert all(p["service"] == "gravity-ingest" for p in parsed)
    accepted = [p for p in parsed if p["message"] == "accepted notification"]
    assert len(accepted) == 1, lines
    line = accepted[0]
    assert line["level"] == "INFO" and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"])
    assert (line["tenantId"], line["messageId"], line["rcMessageId"]) == (
        tenant,
        ids.message_id_for(tenant, rc_id),
        rc_id,
    )
    assert line["traceId"] == trace_id
    assert any("Uvicorn running" in p["message"] or "Application startup" in p["message"] for p in parsed)
