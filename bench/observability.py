"""What tracing costs on the ingest and fanout hot paths, tracing off beside tracing on, in one run.

The OpenTelemetry provider is process-wide, so each configuration is its own service process: ingest (or
fanout) is started, measured and stopped once per round, rounds alternating off, on, off, on … so that
drift on a loaded machine shows in both columns alike. Min and median over the rounds are reported.

- tracing off: no ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the default): the API's no-op tracer.
- tracing on: the endpoint points at an OTLP/HTTP sink in this bench process that counts the spans of each
  ``POST /v1/traces`` and answers 200 with an empty ``ExportTraceServiceResponse``, so the SDK's span
  building, the batch processor and the exporter's protobuf encoding and HTTP POSTs are all paid for. The
  batch processor keeps its defaults (``OTEL_BSP_*`` unset), as a deployment that sets only the endpoint.

1. Ingest: closed loop, 32 connections, verified RingCentral notifications, as ``bench.ingest``.
2. Fanout: ``sms_inbound`` events appended straight to the topic for a tenant with 20 apps, whose
   webhooks are aiohttp receivers in this process; deliveries/s until every receiver has every message,
   and each attempt's duration as fanout recorded it on ``gravity.deliveries.v1``.

The Prometheus metrics are always on in both columns: the HTTP middleware that counts requests also
opens the server span, and the handlers' counters are inline, so their own cost cannot be switched off
without changing the services; it is not measured here.

Registry runs only to provision the tenant, subscription and apps; it is stopped before the first round so
that its projection of the rounds' records does not compete for the cores. Everything else (load
generator, sink, receivers, broker, PostgreSQL) shares this machine's cores.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from tests.support import free_port

from bench.common import ROOT, closed_loop, machine_facts, percentile, service
from bench.fanout import Receivers
from bench.ingest import notification
from gravity_events import ids, topics
from gravity_events.codec import decode, encode, encode_headers
from gravity_events.kafka import make_producer
from gravity_events.models import DeliveryAttempt, SmsInbound
from gravity_events.settings import KafkaSettings

ADMIN = "bench-admin-token"
PAIRS = int(os.environ.get("GRAVITY_BENCH_OBS_PAIRS", "3"))
"""Rounds of each configuration (off, on, off, on …)."""
INGEST_SECONDS = 5.0
FANOUT_APPS = 20
FANOUT_MESSAGES = 100


class OtlpSink:
    """``POST /v1/traces``: count the requests and spans, discard them, answer an empty response."""

    def __init__(self) -> None:
        self.requests = 0
        self.spans = 0
        self.bytes = 0

    async def traces(self, request: web.Request) -> web.Response:
        body = await request.read()
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        self.requests += 1
        self.bytes += len(body)
        self.spans += sum(len(ss.spans) for rs in message.resource_spans for ss in rs.scope_spans)
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def start(self, port: int) -> web.AppRunner:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", self.traces)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner


@dataclass
class Round:
    """One service process's measurement."""

    rate: float
    p50_ms: float
    p99_ms: float
    errors: int
    spans_per_item: float = 0.0


@dataclass
class Column:
    """The rounds of one configuration."""

    rounds: list[Round] = field(default_factory=list)

    def stat(self, pick: Callable[[Round], float], how: Callable[[list[float]], float]) -> float:
        return how([pick(r) for r in self.rounds])


def _tracing_env(on: bool, sink_port: int) -> dict[str, str]:
    """Both endpoint variables, always: an empty one is off, whatever the bench's own environment holds."""
    base = f"http://127.0.0.1:{sink_port}" if on else ""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": base,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": base + "/v1/traces" if on else "",
    }


async def _ingest_round(env: dict[str, str], sink: OtlpSink, sub_id: str, headers: dict[str, str]) -> Round:
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/webhooks/ringcentral"
    spans_before = sink.spans
    prefix = secrets.token_hex(4)
    posts = 0
    with service("gravity_ingest", env | {"GRAVITY_INGEST_PORT": str(port)}, port):
        async with httpx.AsyncClient() as probe:  # until ingest has replayed the subscription
            deadline = time.monotonic() + 20
            while (
                await probe.post(url, content=notification(sub_id, f"w{prefix}{posts}"), headers=headers)
            ).status_code != 200:
                posts += 1
                if time.monotonic() > deadline:
                    raise TimeoutError("ingest never accepted the subscription")
                await asyncio.sleep(0.05)
            posts += 1
        warm = await closed_loop(
            url, lambda i: (notification(sub_id, f"v{prefix}{i}"), headers), concurrency=32, seconds=0.5
        )
        result = await closed_loop(
            url,
            lambda i: (notification(sub_id, f"c{prefix}{i}"), headers),
            concurrency=32,
            seconds=INGEST_SECONDS,
        )
        posts += warm.requests + result.requests
    # the process flushed its last batch on the way out; the sink has every span it exported
    return Round(
        result.rate,
        percentile(result.latencies_ms, 50),
        percentile(result.latencies_ms, 99),
        result.errors,
        (sink.spans - spans_before) / posts,
    )


def _inbound(tenant_id: str, rc: str) -> SmsInbound:
    return SmsInbound(
        message_id=ids.message_id_for(tenant_id, rc),
        from_="+15559876543",
        to="+15551234567",
        body="observability",
        rc_message_id=rc,
        tenant_id=tenant_id,
        timestamp=ids.utcnow(),
    )


async def _fanout_round(
    env: dict[str, str],
    sink: OtlpSink,
    infra: Any,
    tenant_id: str,
    receivers: Receivers,
    paths: list[str],
) -> Round:
    port = free_port()
    kafka = KafkaSettings(
        KAFKA_BOOTSTRAP_SERVERS=infra.kafka_bootstrap_servers,
        KAFKA_ENABLE_IDEMPOTENCE=infra.kafka_enable_idempotence,
    )
    producer = make_producer(kafka, client_id="bench-observability")
    await producer.start()
    attempts_log = AIOKafkaConsumer(
        bootstrap_servers=infra.kafka_bootstrap_servers, enable_auto_commit=False, fetch_max_wait_ms=50
    )
    await attempts_log.start()
    spans_before = sink.spans
    prefix = "f" + secrets.token_hex(4)

    async def send(events: list[SmsInbound]) -> None:
        futures = [
            await producer.send(
                topics.SMS_INBOUND, encode(e), key=e.tenant_id.encode(), headers=encode_headers(e)
            )
            for e in events
        ]
        await asyncio.gather(*futures)

    def arrived(rcs: set[str]) -> int:
        return sum(1 for p in paths for rc in receivers.arrivals.get(p, {}) if rc in rcs)

    round_env = env | {
        "GRAVITY_FANOUT_PORT": str(port),
        "GRAVITY_FANOUT_CONSUMER_GROUP": "bench-obs-" + secrets.token_hex(4),
    }
    try:
        with service("gravity_fanout", round_env, port):
            warm_rcs: set[str] = set()
            deadline = time.monotonic() + 30
            while True:  # until the apps are known and the inbound partitions placed
                warm = [_inbound(tenant_id, f"{prefix}w{len(warm_rcs) + k}") for k in range(10)]
                warm_rcs |= {e.rc_message_id for e in warm}
                await send(warm)
                await asyncio.sleep(1)
                if arrived(warm_rcs) >= len(paths) * 10 or time.monotonic() > deadline:
                    break
            parts = [
                TopicPartition(topics.DELIVERIES, p)
                for p in attempts_log.partitions_for_topic(topics.DELIVERIES) or ()
            ]
            attempts_log.assign(parts)
            for tp, offset in (await attempts_log.end_offsets(parts)).items():
                attempts_log.seek(tp, offset)
            events = [_inbound(tenant_id, f"{prefix}m{i}") for i in range(FANOUT_MESSAGES)]
            rcs = {e.rc_message_id for e in events}
            total = len(events) * len(paths)
            started_wall = time.time()
            await send(events)
            deadline = time.monotonic() + 90
            while arrived(rcs) < total and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            stamps = [t for p in paths for rc, t in receivers.arrivals.get(p, {}).items() if rc in rcs]
            message_ids = {e.message_id for e in events}
            durations: list[float] = []
            deadline = time.monotonic() + 30
            while len(durations) < len(stamps) and time.monotonic() < deadline:
                batch = await attempts_log.getmany(timeout_ms=200)
                for records in batch.values():
                    for r in records:
                        event = decode(topics.DELIVERIES, r.value, r.headers)
                        if isinstance(event, DeliveryAttempt) and event.message_id in message_ids:
                            durations.append(event.duration_ms)
    finally:
        await attempts_log.stop()
        await producer.stop()
    seconds = max(stamps) - started_wall if stamps else float("nan")
    return Round(
        len(stamps) / seconds,
        percentile(durations, 50),
        percentile(durations, 99),
        total - len(stamps),
        (sink.spans - spans_before) / ((len(warm_rcs) + len(events)) * len(paths)),
    )


def _rows(name: str, unit: str, off: Column, on: Column) -> list[str]:
    def cell(pick: Callable[[Round], float], column: Column, fmt: str) -> str:
        return f"{column.stat(pick, min):{fmt}} / {column.stat(pick, statistics.median):{fmt}}"

    def row(label: str, pick: Callable[[Round], float], fmt: str) -> str:
        base = off.stat(pick, statistics.median)
        change = f"{on.stat(pick, statistics.median) / base - 1:+.0%}" if base else "n/a"
        return f"| {name}: {label} | {cell(pick, off, fmt)} | {cell(pick, on, fmt)} | {change} |"

    errors_off = sum(r.errors for r in off.rounds)
    errors_on = sum(r.errors for r in on.rounds)
    spans = on.stat(lambda r: r.spans_per_item, statistics.median)
    return [
        row(unit, lambda r: r.rate, ",.0f"),
        row("p50 ms", lambda r: r.p50_ms, ".1f"),
        row("p99 ms", lambda r: r.p99_ms, ".1f"),
        f"| {name}: failed (all rounds) | {errors_off} | {errors_on} | {spans:.1f} spans exported per "
        f"{'request' if name == 'ingest' else 'delivery'} |",
    ]


async def run(infra: Any) -> str:
    """Provision, then alternate off/on rounds of ingest and then of fanout; return the Markdown section."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap_servers,
        "KAFKA_ENABLE_IDEMPOTENCE": str(infra.kafka_enable_idempotence).lower(),
        "DATABASE_URL": infra.database_url,
        "GRAVITY_ENV": "development",
        "GRAVITY_ADMIN_TOKEN": ADMIN,
        "GRAVITY_SECRET_KEY": secrets.token_urlsafe(32),
        "GRAVITY_LOG_LEVEL": "warning",
        "GRAVITY_FANOUT_RETRY_SCHEDULE": "600",  # a failed attempt's retry stays out of the round
    }
    sink, receivers = OtlpSink(), Receivers()
    sink_port, rx_port, reg_port = free_port(), free_port(), free_port()
    sink_runner = await sink.start(sink_port)
    rx_runner = await receivers.start(rx_port)
    rx = f"http://127.0.0.1:{rx_port}"
    paths = [f"/fast/obs{n}" for n in range(FANOUT_APPS)]
    try:
        with service("gravity_registry", env | {"GRAVITY_REGISTRY_PORT": str(reg_port)}, reg_port):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{reg_port}", timeout=30) as reg:
                admin = {"Authorization": f"Bearer {ADMIN}"}
                tenant = (await reg.post("/v1/tenants", json={"name": "obs"}, headers=admin)).json()
                sub_id = "bench-" + secrets.token_hex(4)
                sub = (
                    await reg.post(
                        "/v1/dev/subscriptions",
                        json={"tenantId": tenant["tenantId"], "subscriptionId": sub_id},
                        headers=admin,
                    )
                ).json()
                auth = {"Authorization": f"Bearer {tenant['apiKey']}"}
                for path in paths:
                    r = await reg.post("/v1/apps", json={"name": path, "webhookUrl": rx + path}, headers=auth)
                    assert r.status_code in (200, 201), r.text
        headers = {"Content-Type": "application/json", "Verification-Token": sub["verificationToken"]}

        order = [on for _ in range(PAIRS) for on in (False, True)]
        ingest = {False: Column(), True: Column()}
        for on in order:
            print(f"  ingest, tracing {'on' if on else 'off'} …", flush=True)
            ingest[on].rounds.append(
                await _ingest_round(env | _tracing_env(on, sink_port), sink, sub_id, headers)
            )
        fanout = {False: Column(), True: Column()}
        for on in order:
            print(f"  fanout, tracing {'on' if on else 'off'} …", flush=True)
            fanout[on].rounds.append(
                await _fanout_round(
                    env | _tracing_env(on, sink_port), sink, infra, tenant["tenantId"], receivers, paths
                )
            )
    finally:
        await rx_runner.cleanup()
        await sink_runner.cleanup()

    lines = [
        "## Observability cost (tracing off vs on)",
        "",
        f"Machine: {machine_facts()}. Broker: {infra.kafka_source}.",
        "",
        f"{PAIRS} rounds per configuration, alternating off/on, each a fresh service process; cells are "
        "min / median over the rounds; change compares the medians. Tracing on: OTLP http/protobuf to a "
        f"discarding sink in the bench process (it received {sink.requests:,} exports, "
        f"{sink.spans:,} spans, {sink.bytes / 1e6:,.1f} MB in all), batch processor at its defaults. "
        "Metrics are on in both columns (their own cost is not isolated).",
        "",
        f"- ingest: verified SMS notifications, closed loop C=32, {INGEST_SECONDS:.0f} s; requests/s and "
        "POST latency.",
        f"- fanout: {FANOUT_MESSAGES} messages x {FANOUT_APPS} apps appended to `sms_inbound`; deliveries/s "
        "until every receiver has every message, and the attempt duration fanout logged for each.",
        "",
        "| measurement | tracing off | tracing on | change |",
        "| --- | --- | --- | --- |",
        *_rows("ingest", "req/s", ingest[False], ingest[True]),
        *_rows("fanout", "deliveries/s", fanout[False], fanout[True]),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(ROOT))
    from bench.__main__ import main

    main(["observability"])
