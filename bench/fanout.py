"""Fanout benchmark.

1. Webhook latency: ingest POST → webhook received, at 200 events/s for 10 s, 20 apps of one tenant. Run
   once with the 20 fast apps alone, then again with a hanging app and a 500-answering app added, side by
   side. Goal: p99 ≤ 50 ms on the memory broker; the bad apps change the fast apps' p99 by < 20 %.
2. Ceiling: ``sms_inbound`` events appended straight to the topic for a tenant with 100 fast apps; deliveries
   per second until every receiver has every message, beside a bare ``DeliveryClient`` loop (the same HTTP
   client and receivers, no Kafka, no fanout) measured in the same run.

Registry, ingest and fanout run as separate processes; receivers (aiohttp) and the load generator share
the bench process. Everything shares this machine's cores.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from typing import Any

import httpx
import orjson
from aiohttp import web
from tests.support import free_port

from bench.common import ROOT, machine_facts, open_loop, percentile, service, summary_ms
from bench.ingest import notification
from gravity_events import ids, topics
from gravity_events.codec import encode, encode_headers
from gravity_events.kafka import make_producer
from gravity_events.models import SmsInbound
from gravity_events.settings import KafkaSettings
from gravity_webhooks import DeliveryClient, new_signing_secret

ADMIN = "bench-admin-token"


class Receivers:
    """aiohttp endpoints: /fast/<n> answer 200, /hang never answers, /fail answers 500."""

    def __init__(self) -> None:
        self.arrivals: dict[str, dict[str, float]] = {}  # path → rcMessageId → first arrival
        self.count = 0

    async def fast(self, request: web.Request) -> web.Response:
        stamp = time.time()
        body = await request.read()
        self.count += 1
        rc = orjson.loads(body)["rcMessageId"]
        self.arrivals.setdefault(request.path, {}).setdefault(rc, stamp)
        return web.Response(text="ok")

    async def hang(self, request: web.Request) -> web.Response:
        await asyncio.Event().wait()
        raise AssertionError

    async def fail(self, request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=500, text="down")

    async def start(self, port: int) -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/fast/{n}", self.fast)
        app.router.add_post("/hang", self.hang)
        app.router.add_post("/fail", self.fail)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner


async def _latency_run(
    url: str,
    sub_id: str,
    headers: dict[str, str],
    receivers: Receivers,
    paths: list[str],
    prefix: str,
    rate: float = 200,
) -> tuple[list[float], int]:
    sent: dict[str, float] = {}

    def mark(i: int, t: float) -> None:
        sent[f"{prefix}{i}"] = t

    await open_loop(
        url, lambda i: (notification(sub_id, f"{prefix}{i}"), headers), rate=rate, seconds=10, on_sent=mark
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if all(
            len([k for k in receivers.arrivals.get(p, {}) if k.startswith(prefix)]) >= len(sent)
            for p in paths
        ):
            break
        await asyncio.sleep(0.2)
    latencies, missing = [], 0
    for p in paths:
        got = receivers.arrivals.get(p, {})
        for rc, t0 in sent.items():
            if rc in got:
                latencies.append((got[rc] - t0) * 1000)
            else:
                missing += 1
    return latencies, missing


def _reasons(errors: Counter[str]) -> str:
    """``first attempt: <error> x n`` for each error the attempt log gave."""
    return ", ".join(f"first attempt: {error} x {n}" for error, n in errors.most_common())


async def run(infra: Any) -> str:
    """Both measurements; return the Markdown section."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap_servers,
        "KAFKA_ENABLE_IDEMPOTENCE": str(infra.kafka_enable_idempotence).lower(),
        "DATABASE_URL": infra.database_url,
        "GRAVITY_ENV": "development",
        "GRAVITY_ADMIN_TOKEN": ADMIN,
        "GRAVITY_SECRET_KEY": secrets.token_urlsafe(32),
        "GRAVITY_LOG_LEVEL": "warning",
        "GRAVITY_FANOUT_CONSUMER_GROUP": "bench-fanout-" + secrets.token_hex(4),
        "GRAVITY_FANOUT_RETRY_SCHEDULE": "600",  # the 500 app's retries stay out of the measured window
    }
    reg_port, ing_port, fan_port, rx_port = free_port(), free_port(), free_port(), free_port()
    env |= {
        "GRAVITY_REGISTRY_PORT": str(reg_port),
        "GRAVITY_INGEST_PORT": str(ing_port),
        "GRAVITY_FANOUT_PORT": str(fan_port),
    }
    receivers = Receivers()
    runner = await receivers.start(rx_port)
    rx = f"http://127.0.0.1:{rx_port}"
    lines = ["## Fanout (webhooks)", "", f"Machine: {machine_facts()}. Broker: Tansu memory engine.", ""]
    try:
        with (
            service("gravity_registry", env, reg_port),
            service("gravity_ingest", env, ing_port),
            service("gravity_fanout", env, fan_port),
        ):
            reg = httpx.AsyncClient(base_url=f"http://127.0.0.1:{reg_port}", timeout=30)
            admin = {"Authorization": f"Bearer {ADMIN}"}
            tenant = (await reg.post("/v1/tenants", json={"name": "bench"}, headers=admin)).json()
            auth = {"Authorization": f"Bearer {tenant['apiKey']}"}
            fast = [f"/fast/{n}" for n in range(20)]
            for path in fast:
                await reg.post("/v1/apps", json={"name": path, "webhookUrl": rx + path}, headers=auth)
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
            async with httpx.AsyncClient() as probe:  # until ingest knows the subscription and apps arrive
                deadline = time.monotonic() + 20
                while True:
                    await probe.post(
                        url, content=notification(sub_id, "warm" + secrets.token_hex(3)), headers=headers
                    )
                    if len(receivers.arrivals) >= len(fast) or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.2)

            light, missing_light = await _latency_run(
                url, sub_id, headers, receivers, fast, "l" + secrets.token_hex(3), rate=20
            )
            await reg.post("/v1/apps", json={"name": "hang", "webhookUrl": rx + "/hang"}, headers=auth)
            await reg.post("/v1/apps", json={"name": "fail", "webhookUrl": rx + "/fail"}, headers=auth)
            await asyncio.sleep(2)  # let fanout learn the two apps (propagation is well under this)
            bad, missing_bad = await _latency_run(
                url, sub_id, headers, receivers, fast, "b" + secrets.token_hex(3), rate=20
            )
            # ceiling: 100 apps, sms_inbound appended directly
            wide = (await reg.post("/v1/tenants", json={"name": "wide"}, headers=admin)).json()
            wide_auth = {"Authorization": f"Bearer {wide['apiKey']}"}
            wide_paths = [f"/fast/w{n}" for n in range(100)]
            wide_apps = {}
            for path in wide_paths:
                r = await reg.post(
                    "/v1/apps", json={"name": path, "webhookUrl": rx + path}, headers=wide_auth
                )
                wide_apps[path] = r.json()["appId"]
            await asyncio.sleep(2)
            n_messages = 300
            kafka = KafkaSettings(
                KAFKA_BOOTSTRAP_SERVERS=infra.kafka_bootstrap_servers,
                KAFKA_ENABLE_IDEMPOTENCE=infra.kafka_enable_idempotence,
            )
            producer = make_producer(kafka, client_id="bench")
            await producer.start()
            events = []
            for i in range(n_messages):
                rc = f"w{i}-{secrets.token_hex(3)}"
                events.append(
                    SmsInbound(
                        message_id=ids.message_id_for(wide["tenantId"], rc),
                        from_="+15559876543",
                        to="+15551234567",
                        body="ceiling",
                        rc_message_id=rc,
                        tenant_id=wide["tenantId"],
                        timestamp=ids.utcnow(),
                    )
                )
            started, started_wall = time.monotonic(), time.time()
            futures = [
                await producer.send(
                    topics.SMS_INBOUND, encode(e), key=e.tenant_id.encode(), headers=encode_headers(e)
                )
                for e in events
            ]
            await asyncio.gather(*futures)
            await producer.stop()
            total = n_messages * len(wide_paths)

            def wide_arrivals() -> list[float]:
                return [t for p in wide_paths for t in receivers.arrivals.get(p, {}).values()]

            deadline = time.monotonic() + 120
            while len(wide_arrivals()) < total and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            arrivals = sorted(wide_arrivals())
            ceiling_missing = total - len(arrivals)
            ceiling_seconds = arrivals[-1] - started_wall
            fanout_rate = len(arrivals) / ceiling_seconds
            ceiling_errors: Counter[str] = Counter()  # why the missing ones are missing: the attempt log
            for p, e in [
                (p, e)
                for p in wide_paths
                for e in events
                if e.rc_message_id not in receivers.arrivals.get(p, {})
            ]:
                r = await reg.get(
                    f"/v1/apps/{wide_apps[p]}/deliveries",
                    params={"messageId": e.message_id},
                    headers=wide_auth,
                )
                attempts = r.json()["deliveries"]
                ceiling_errors.update(
                    [attempts[0]["error"] or f"HTTP {attempts[0]['responseCode']}"]
                    if attempts
                    else ["no attempt recorded"]
                )
            spec, missing_spec = await _latency_run(
                url, sub_id, headers, receivers, fast, "s" + secrets.token_hex(3), rate=200
            )
    finally:
        pass

    # baseline: the same client and receivers, no Kafka and no fanout, one client per app as fanout has
    clients = {
        p: DeliveryClient(production=False, user_agent="bench", max_connections=16) for p in wide_paths
    }
    secret = [new_signing_secret()]
    body = encode(events[0])
    count, stop_at = 0, time.monotonic() + 5

    async def worker(path: str) -> None:
        nonlocal count
        while time.monotonic() < stop_at:
            result = await clients[path].deliver(
                rx + path, body, message_id="msg_000000000000", secrets=secret
            )
            count += result.ok

    started = time.monotonic()
    await asyncio.gather(*(worker(p) for p in wide_paths))
    bare_rate = count / (time.monotonic() - started)
    await asyncio.gather(*(c.aclose() for c in clients.values()))
    await runner.cleanup()

    await reg.aclose()
    p99_alone, p99_bad = percentile(light, 99), percentile(bad, 99)
    change = (p99_bad - p99_alone) / p99_alone if p99_alone else float("nan")
    lines += [
        "| measurement | figure |",
        "| --- | --- |",
        f"| ingest POST → webhook received, 20 events/s x 20 apps (400 deliveries/s), 10 s | "
        f"{summary_ms(light)}; missing {missing_light} (goal p99 ≤ 50 ms) |",
        f"| the same with a hanging and a 500-answering app added | {summary_ms(bad)}; "
        f"missing {missing_bad}; fast apps' p99 changed {change:+.0%} (goal < 20 %) |",
        "| the heavy load: 200 events/s x 20 apps (4,000 deliveries/s), bad apps too "
        "| "
        f"{summary_ms(spec)}; not delivered within 30 s: {missing_spec} |",
        "| fanout ceiling: 300 messages x 100 apps appended to `sms_inbound` "
        f"| {fanout_rate:,.0f} deliveries/s (the last of {len(arrivals):,} at {ceiling_seconds:.1f} s); "
        f"not delivered within 120 s: {ceiling_missing}"
        + (f" ({_reasons(ceiling_errors)}; retried after 600 s in this bench)" if ceiling_missing else "")
        + " |",
        "| baseline: bare `DeliveryClient` per app, 100 loops, same receivers, 5 s "
        f"| {bare_rate:,.0f} POSTs/s |",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(ROOT))
    from bench.__main__ import main

    main(["fanout"])
