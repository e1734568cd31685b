"""A registry process SIGKILLed while it projects: after a restart every event is stored exactly once and
published at least once."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
from typing import Any

import asyncpg
import httpx
from tests.registry.conftest import (
    ADMIN_TOKEN,
    feed,
    now_ms,
    raw,
    sms_inbound_for,
)
from tests.support import eventually, free_port, wait_ready

from gravity_events import ids
from gravity_events.settings import KafkaSettings


async def test_registry_killed_mid_stream_stores_every_event_exactly_once(
    kafka_settings: KafkaSettings, make_database: Any
) -> None:
    since = now_ms()
    url = await make_database()
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.kafka_bootstrap_servers,
        "KAFKA_ENABLE_IDEMPOTENCE": "false",
        "DATABASE_URL": url,
        "GRAVITY_ADMIN_TOKEN": ADMIN_TOKEN,
        "GRAVITY_REGISTRY_PORT": str(port),
        "GRAVITY_REGISTRY_CONSUMER_GROUP": "registry-kill-" + secrets.token_hex(4),
        "GRAVITY_LOG_LEVEL": "warning",
    }

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "gravity_registry"], env=env)

    proc = start()
    try:
        await wait_ready(f"http://127.0.0.1:{port}", proc=proc)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            tenant = (
                await c.post(
                    "/v1/tenants", json={"name": "k"}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
                )
            ).json()
        events = [raw(tenant["tenantId"]) for _ in range(200)]
        conn = await asyncpg.connect(url)

        async def count() -> int:
            return int(
                await conn.fetchval("SELECT count(*) FROM messages WHERE tenant_id = $1", tenant["tenantId"])
            )

        feeder = asyncio.create_task(feed(kafka_settings, *events))
        await eventually(lambda: _at_least(count, 20), timeout=30, interval=0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        await feeder
        proc = start()
        await eventually(lambda: _at_least(count, 200), timeout=60)
        assert await count() == 200

        async def all_published() -> bool:
            left = await conn.fetchval(
                "SELECT count(*) FROM messages WHERE tenant_id = $1 AND NOT published", tenant["tenantId"]
            )
            return bool(left == 0)

        await eventually(all_published, timeout=30)
        await conn.close()
        mids = {ids.message_id_for(tenant["tenantId"], e.rc_message_id) for e in events}
        counts = await sms_inbound_for(kafka_settings, mids, since)
        assert min(counts.values()) >= 1  # at least once; a repeat is allowed after a crash
    finally:
        proc.kill()
        proc.wait()


async def _at_least(fn: Any, n: int) -> bool:
    return bool(await fn() >= n)
