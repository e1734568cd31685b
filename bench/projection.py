"""Projection latency alone: a raw record appended → its ``sms_inbound`` read back, one at a time.

No HTTP and no load generator: this isolates the registry's per-batch work (insert, read back unpublished,
publish and wait for acks, mark published) plus two broker hops, to compare with the full path measured
under load by ``bench.ingest``.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from asgi_lifespan import LifespanManager
from tests.support import notification

from bench.common import summary_ms
from gravity_events import ids, topics
from gravity_events.kafka import make_producer, publish
from gravity_events.models import RcNotification
from gravity_events.settings import KafkaSettings
from gravity_registry.app import create_app
from gravity_registry.settings import Settings

_ADMIN = "bench-admin-token"


async def run(infra: Any) -> str:
    """200 records, one every 20 ms; return the Markdown section."""
    kafka = KafkaSettings(
        KAFKA_BOOTSTRAP_SERVERS=infra.kafka_bootstrap_servers, KAFKA_ENABLE_IDEMPOTENCE=False
    )
    settings = Settings(
        KAFKA_BOOTSTRAP_SERVERS=infra.kafka_bootstrap_servers,
        KAFKA_ENABLE_IDEMPOTENCE=False,
        DATABASE_URL=infra.database_url,
        GRAVITY_REGISTRY_CONSUMER_GROUP="bench-projection-" + secrets.token_hex(4),
        GRAVITY_ADMIN_TOKEN=_ADMIN,
    )
    app = create_app(settings)
    latencies: list[float] = []
    async with LifespanManager(app, startup_timeout=120):
        await app.state.projection.caught_up.wait()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=infra.kafka_bootstrap_servers, enable_auto_commit=False, fetch_max_wait_ms=5
        )
        await consumer.start()
        parts = consumer.partitions_for_topic(topics.SMS_INBOUND) or set()
        tps = [TopicPartition(topics.SMS_INBOUND, p) for p in parts]
        consumer.assign(tps)
        for tp in tps:
            await consumer.seek_to_end(tp)
        producer = make_producer(kafka, client_id="bench-projection")
        await producer.start()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://registry") as api:
            created = await api.post(
                "/v1/tenants", json={"name": "bench"}, headers={"Authorization": f"Bearer {_ADMIN}"}
            )
            tenant = created.json()["tenantId"]  # the projection skips tenants it does not know
        try:
            for _ in range(200):
                body = notification("bench")
                event = RcNotification(
                    tenant_id=tenant,
                    subscription_id="bench",
                    rc_message_id=body["body"]["id"],
                    received_at=ids.utcnow(),
                    notification=body,
                )
                started = time.perf_counter()
                await publish(producer, topics.RC_RAW, event, key=event.rc_message_id)
                deadline = started + 10
                found = False
                while not found and time.perf_counter() < deadline:
                    batch = await consumer.getmany(timeout_ms=100)
                    found = any(
                        orjson.loads(r.value)["rcMessageId"] == event.rc_message_id
                        for records in batch.values()
                        for r in records
                    )
                if found:
                    latencies.append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(0.02)
        finally:
            await producer.stop()
            await consumer.stop()
    return "\n".join(
        [
            "## Projection alone",
            "",
            "| measurement | figure |",
            "| --- | --- |",
            "| raw record appended → `sms_inbound` read back, one at a time, 50/s "
            f"| {summary_ms(latencies)} |",
            "",
        ]
    )
