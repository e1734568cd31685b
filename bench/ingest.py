"""Ingest benchmark.

1. Closed loop, 32 connections, 10 s: verified inbound-SMS POSTs to ingest, beside the same load on a bare
   uvicorn endpoint that only reads the body and answers 200 (same server stack, same run). Goal: ingest
   ≥ 60 % of the bare rate.
2. Open loop, 200 events/s for 10 s: POST → row stored → ``sms_inbound`` published, measured from the
   moment the POST is sent to the moment the event is read back from the canonical topic. Goal: p99 ≤ 30 ms
   on the memory broker.

The load generator, the services, the broker and PostgreSQL all share this machine's cores, so the
figures are what one laptop-class box does with everything on it, not a service's isolated ceiling.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from tests.support import free_port

from bench.common import ROOT, closed_loop, machine_facts, open_loop, service, summary_ms
from gravity_events import ids, topics
from gravity_events.kafka import offsets_at

ADMIN = "bench-admin-token"


def notification(subscription_id: str, rc_id: str) -> bytes:
    """A contract-shaped instant inbound-SMS notification."""
    return orjson.dumps(
        {
            "uuid": rc_id,
            "event": "/restapi/v1.0/account/809646016/extension/629893016/message-store/instant?type=SMS",
            "timestamp": "2026-03-01T14:30:00.034Z",
            "subscriptionId": subscription_id,
            "ownerId": "629893016",
            "body": {
                "id": rc_id,
                "to": [{"phoneNumber": "+15551234567", "target": True}],
                "from": {"phoneNumber": "+15559876543"},
                "type": "SMS",
                "creationTime": "2026-03-01T14:30:00.000Z",
                "direction": "Inbound",
                "subject": "benchmark",
                "conversation": {"id": "1"},
            },
        }
    )


async def run(infra: Any) -> str:
    """Run both measurements; return the Markdown section."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap_servers,
        "KAFKA_ENABLE_IDEMPOTENCE": str(infra.kafka_enable_idempotence).lower(),
        "DATABASE_URL": infra.database_url,
        "GRAVITY_ENV": "development",
        "GRAVITY_ADMIN_TOKEN": ADMIN,
        "GRAVITY_SECRET_KEY": secrets.token_urlsafe(32),
        "GRAVITY_LOG_LEVEL": "warning",
    }
    reg_port, ing_port, bare_port = free_port(), free_port(), free_port()
    env |= {"GRAVITY_REGISTRY_PORT": str(reg_port), "GRAVITY_INGEST_PORT": str(ing_port)}
    lines = ["## Ingest", "", f"Machine: {machine_facts()}. Broker: Tansu memory engine.", ""]

    bare_args = ["bench.bare_app:app", "--port", str(bare_port), "--log-level", "warning"]
    with service("uvicorn", env, bare_port, args=bare_args):
        bare = await closed_loop(
            f"http://127.0.0.1:{bare_port}/v1/webhooks/ringcentral",
            lambda i: (notification("s", str(i)), {"Content-Type": "application/json"}),
            concurrency=32,
            seconds=10,
        )

    with service("gravity_registry", env, reg_port), service("gravity_ingest", env, ing_port):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{reg_port}") as reg:
            admin = {"Authorization": f"Bearer {ADMIN}"}
            tenant = (await reg.post("/v1/tenants", json={"name": "bench"}, headers=admin)).json()
            sub_id = "bench-" + secrets.token_hex(4)
            sub = (
                await reg.post(
                    "/v1/dev/subscriptions",
                    json={"tenantId": tenant["tenantId"], "subscriptionId": sub_id},
                    headers=admin,
                )
            ).json()
        headers = {"Content-Type": "application/json", "Verification-Token": sub["verificationToken"]}
        url = f"http://127.0.0.1:{ing_port}/v1/webhooks/ringcentral"
        async with httpx.AsyncClient() as probe:  # wait until ingest knows the subscription
            deadline = time.monotonic() + 10
            while (
                await probe.post(url, content=notification(sub_id, "warm"), headers=headers)
            ).status_code != 200:
                if time.monotonic() > deadline:
                    raise TimeoutError("ingest never accepted the subscription")
                await asyncio.sleep(0.05)

        prefix = secrets.token_hex(4)
        ingest = await closed_loop(
            url, lambda i: (notification(sub_id, f"c{prefix}{i}"), headers), concurrency=32, seconds=10
        )

        # Let the projection finish the closed loop's backlog first: otherwise the open loop's first messages
        # queue behind ~30,000 records and the tail measures the backlog, not the path. Markers posted now
        # (spread over the raw topic's partitions by their keys) are stored once every partition caught up.
        markers = [f"m{prefix}{k}" for k in range(48)]
        async with httpx.AsyncClient() as probe:
            for rc_id in markers:
                r = await probe.post(url, content=notification(sub_id, rc_id), headers=headers)
                assert r.status_code == 200, r.text
            auth = {"Authorization": f"Bearer {tenant['apiKey']}"}
            deadline = time.monotonic() + 120
            for rc_id in markers:
                message_id = ids.message_id_for(tenant["tenantId"], rc_id)
                path = f"http://127.0.0.1:{reg_port}/v1/sms/messages/{message_id}"
                while (await probe.get(path, headers=auth)).status_code != 200:
                    if time.monotonic() > deadline:
                        raise TimeoutError("the projection never caught up with the closed loop")
                    await asyncio.sleep(0.05)

        # Open loop: read sms_inbound from now on.
        consumer = AIOKafkaConsumer(
            bootstrap_servers=infra.kafka_bootstrap_servers, enable_auto_commit=False, fetch_max_wait_ms=5
        )
        await consumer.start()
        parts = [
            TopicPartition(topics.SMS_INBOUND, p) for p in consumer.partitions_for_topic(topics.SMS_INBOUND)
        ]
        consumer.assign(parts)
        now_ms = int(time.time() * 1000)
        for tp, offset in (await offsets_at(consumer, parts, now_ms)).items():
            consumer.seek(tp, offset)
        sent: dict[str, float] = {}
        seen: dict[str, float] = {}
        open_prefix = "o" + secrets.token_hex(4)

        async def reader() -> None:
            while True:
                batch = await consumer.getmany(timeout_ms=50)
                stamp = time.time()
                for records in batch.values():
                    for r in records:
                        rc = orjson.loads(r.value)["rcMessageId"]
                        if rc.startswith(open_prefix):
                            seen.setdefault(rc, stamp)

        task = asyncio.create_task(reader())

        def mark(i: int, t: float) -> None:
            sent[f"{open_prefix}{i}"] = t

        rate_result = await open_loop(
            url,
            lambda i: (notification(sub_id, f"{open_prefix}{i}"), headers),
            rate=200,
            seconds=10,
            on_sent=mark,
        )
        deadline = time.monotonic() + 30
        while len(seen) < len(sent) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        task.cancel()
        await consumer.stop()
        e2e = [(seen[k] - sent[k]) * 1000 for k in sent if k in seen]

    ratio = ingest.rate / bare.rate if bare.rate else float("nan")
    lines += [
        "| measurement | figure |",
        "| --- | --- |",
        f"| bare uvicorn endpoint, closed loop C=32, 10 s | {bare.rate:,.0f} req/s; "
        f"{summary_ms(bare.latencies_ms)} |",
        f"| ingest, verified SMS, closed loop C=32, 10 s | {ingest.rate:,.0f} req/s "
        f"({ratio:.0%} of bare; goal ≥ 60 %); {summary_ms(ingest.latencies_ms)}; errors {ingest.errors} |",
        f"| ingest POST answer at 200 events/s, 10 s | {summary_ms(rate_result.latencies_ms)}; "
        f"errors {rate_result.errors} |",
        f"| POST → stored → `sms_inbound` read back, 200 events/s | {summary_ms(e2e)}; "
        f"missing {len(sent) - len(e2e)} (goal p99 ≤ 30 ms) |",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(ROOT))
    from bench.__main__ import main

    main(["ingest"])
