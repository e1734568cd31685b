"""Registry read model at scale: 1,000,000 stored messages, the messages API's list and lookup latency.

Goal: list page p99 ≤ 20 ms. The registry runs as its own process on a fresh database; rows are
generated inside PostgreSQL (``generate_series``), half for one large tenant, the rest over nine others.
Each query is sent one at a time (latency, not throughput) over one keep-alive connection, beside two
baselines from the same run: a bare uvicorn endpoint through the same client (the HTTP floor) and the
same SQL sent directly with asyncpg (the database floor).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
from tests.support import free_port

from bench.common import service, summary_ms

ROWS = 1_000_000
SAMPLES = 300
ADMIN = "bench-admin-token-" + "q" * 16


def _database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


async def _timed(n: int, call: Callable[[int], Awaitable[None]]) -> list[float]:
    out = []
    for i in range(n):
        started = time.perf_counter()
        await call(i)
        out.append((time.perf_counter() - started) * 1000)
    return out


async def run(infra: Any) -> str:
    """Fill 1,000,000 messages, measure; return the Markdown section."""
    name = "bench_queries_" + secrets.token_hex(4)
    admin_conn = await asyncpg.connect(infra.database_url)
    await admin_conn.execute(f'CREATE DATABASE "{name}"')
    await admin_conn.close()
    database_url = _database(infra.database_url, name)
    port, bare_port = free_port(), free_port()
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap_servers,
        "KAFKA_ENABLE_IDEMPOTENCE": "false",
        "DATABASE_URL": database_url,
        "GRAVITY_ADMIN_TOKEN": ADMIN,
        "GRAVITY_REGISTRY_PORT": str(port),
        "GRAVITY_REGISTRY_CONSUMER_GROUP": "bench-queries-" + secrets.token_hex(4),
        "GRAVITY_LOG_LEVEL": "warning",
    }
    base = f"http://127.0.0.1:{port}"
    rows: dict[str, list[float]] = {}
    with service("gravity_registry", env, port):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as http:

            async def post(path: str, body: dict[str, Any], token: str) -> dict[str, Any]:
                headers = {"Authorization": f"Bearer {token}"}
                async with http.post(base + path, json=body, headers=headers) as r:
                    assert r.status == 201, await r.text()
                    result: dict[str, Any] = await r.json()
                    return result

            tenants = [await post("/v1/tenants", {"name": f"t{i}"}, ADMIN) for i in range(10)]
            big = tenants[0]
            conn = await asyncpg.connect(database_url)
            try:
                fill_started = time.perf_counter()
                # half the rows for the big tenant, the rest spread over the nine others; one row a second
                await conn.execute(
                    """
                    INSERT INTO messages (tenant_id, rc_message_id, message_id, from_number, to_number, body,
                                          "timestamp", received_at, conversation_id, published)
                    SELECT ($1::text[])[CASE WHEN i % 2 = 0 THEN 1 ELSE 2 + i % 9 END],
                           i::text,
                           'msg_' || substr(md5(i::text), 1, 12),
                           '+1555' || lpad((i % 5000)::text, 7, '0'),
                           '+15551234567',
                           'message number ' || i,
                           now() - make_interval(secs => $2 - i),
                           now() - make_interval(secs => $2 - i),
                           NULL,
                           true
                    FROM generate_series(1, $2) AS i
                    """,
                    [t["tenantId"] for t in tenants],
                    ROWS,
                )
                await conn.execute("ANALYZE messages")
                fill_seconds = time.perf_counter() - fill_started
                auth = {"Authorization": f"Bearer {big['apiKey']}"}

                async def get(path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
                    async with http.get(base + path, params=params, headers=auth) as r:
                        assert r.status == 200, await r.text()
                        result: dict[str, Any] = await r.json()
                        return result

                await get("/v1/sms/messages")  # warm the connection and the key cache
                first = await get("/v1/sms/messages", {"limit": 100})
                sample_ids = [m["messageId"] for m in first["messages"]]

                async def first_page(i: int) -> None:
                    await get("/v1/sms/messages", {"limit": 20})

                cursor: list[str | None] = [None]

                async def walk(i: int) -> None:  # page after page, 300 pages deep
                    params: dict[str, Any] = {"limit": 100}
                    if cursor[0]:
                        params["cursor"] = cursor[0]
                    cursor[0] = (await get("/v1/sms/messages", params))["nextCursor"]

                async def by_sender(i: int) -> None:  # one sender in 5,000: about 100 rows of 500,000
                    await get("/v1/sms/messages", {"limit": 20, "from": f"+1555{i % 5000:07d}"})

                async def outbound(i: int) -> None:  # none stored: the gateway receives only inbound
                    await get("/v1/sms/messages", {"limit": 20, "direction": "outbound"})

                async def by_id(i: int) -> None:
                    await get(f"/v1/sms/messages/{sample_ids[i % len(sample_ids)]}")

                rows["list, first page (limit 20)"] = await _timed(SAMPLES, first_page)
                rows["list, paging with nextCursor (limit 100), 300 pages deep"] = await _timed(SAMPLES, walk)
                rows["list filtered by `from` (1 sender in 5,000)"] = await _timed(SAMPLES, by_sender)
                rows["list filtered by `direction=outbound` (none stored)"] = await _timed(SAMPLES, outbound)
                rows["one message by id"] = await _timed(SAMPLES, by_id)

                async def sql_first_page(i: int) -> None:
                    await conn.fetch(
                        "SELECT * FROM messages WHERE tenant_id = $1"
                        " ORDER BY received_at DESC, message_id DESC LIMIT 21",
                        big["tenantId"],
                    )

                sql = await _timed(SAMPLES, sql_first_page)
            finally:
                await conn.close()
    bare_args = ["bench.bare_app:app", "--port", str(bare_port), "--log-level", "warning"]
    with service("uvicorn", {}, bare_port, args=bare_args):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as http:

            async def bare(i: int) -> None:
                async with http.get(f"http://127.0.0.1:{bare_port}/") as r:
                    await r.read()

            await bare(0)
            bare_ms = await _timed(SAMPLES, bare)
    lines = [
        "## Registry queries on 1,000,000 messages",
        "",
        f"{ROWS:,} rows (500,000 for the tenant queried), generated in PostgreSQL in {fill_seconds:.0f} s; "
        f"{SAMPLES} requests per row, one at a time over one keep-alive connection. "
        "Goal: list page p99 ≤ 20 ms.",
        "",
        "| measurement | figure |",
        "| --- | --- |",
        f"| baseline: bare uvicorn endpoint, same client | {summary_ms(bare_ms)} |",
        f"| baseline: the first-page SQL sent directly (asyncpg) | {summary_ms(sql)} |",
    ]
    lines += [f"| {what} | {summary_ms(values)} |" for what, values in rows.items()]
    return "\n".join([*lines, ""])
