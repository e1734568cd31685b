"""Processes for the realtime benchmark: ``python -m bench.ws_tools clients|bare ...``.

- ``clients URL N SECONDS``: open N WebSocket connections (200 handshakes at a time), print the connect
  time, read every frame for SECONDS after the first one, and print one JSON line: connect seconds, frames,
  and latency percentiles (the frame's ``body`` carries the publish time, ``time.time()``).
- ``bare PORT BOOTSTRAP``: a bare ``websockets`` server that reads ``sms_inbound`` from now (all partitions)
  and broadcasts each record's bytes to every connection: the baseline.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time

import orjson
from websockets.asyncio.client import connect


def _raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def clients(url: str, n: int, seconds: float) -> None:
    _raise_fd_limit()
    gate = asyncio.Semaphore(200)
    latencies: list[float] = []
    frames = 0
    first: list[float] = []

    async def one() -> object:
        async with gate:
            return await connect(url, open_timeout=60, ping_interval=None, max_queue=64, compression=None)

    started = time.monotonic()
    sockets = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
    connected = [s for s in sockets if not isinstance(s, BaseException)]
    connect_seconds = time.monotonic() - started
    print(json.dumps({"connected": len(connected), "connect_seconds": connect_seconds}), flush=True)

    async def read(ws: object) -> None:
        nonlocal frames
        await ws.recv()  # type: ignore[attr-defined]  # the connected frame
        while True:
            raw = await ws.recv()  # type: ignore[attr-defined]
            now = time.time()
            if not first:
                first.append(time.monotonic())
            body = orjson.loads(raw)["body"]
            frames += 1
            latencies.append((now - float(body)) * 1000)

    tasks = [asyncio.create_task(read(ws)) for ws in connected]
    while not first:
        await asyncio.sleep(0.05)
    await asyncio.sleep(seconds)
    for t in tasks:
        t.cancel()
    latencies.sort()

    def pct(p: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] if latencies else float("nan")
        )

    print(
        json.dumps(
            {
                "connected": len(connected),
                "connect_seconds": connect_seconds,
                "frames": frames,
                "p50": pct(50),
                "p99": pct(99),
                "max": latencies[-1] if latencies else float("nan"),
            }
        ),
        flush=True,
    )
    await asyncio.gather(*(ws.close() for ws in connected), return_exceptions=True)  # type: ignore[attr-defined]


async def bare(port: int, bootstrap: str) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from websockets.asyncio.server import broadcast, serve

    from gravity_events.kafka import offsets_at

    _raise_fd_limit()
    connections: set[object] = set()

    async def handler(ws: object) -> None:
        await ws.send('{"type":"connected"}')  # type: ignore[attr-defined]
        connections.add(ws)
        try:
            await ws.wait_closed()  # type: ignore[attr-defined]
        finally:
            connections.discard(ws)

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10)
    await consumer.start()
    parts = [
        TopicPartition("gravity.sms.inbound.v1", p)
        for p in consumer.partitions_for_topic("gravity.sms.inbound.v1")
    ]
    consumer.assign(parts)
    for tp, offset in (await offsets_at(consumer, parts, int(time.time() * 1000))).items():
        consumer.seek(tp, offset)
    async with serve(handler, "127.0.0.1", port, compression=None, ping_interval=None):
        print("ready", flush=True)
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            for records in batch.values():
                for r in records:
                    broadcast(connections, r.value.decode())  # type: ignore[arg-type]


if __name__ == "__main__":
    if sys.argv[1] == "clients":
        asyncio.run(clients(sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
    else:
        asyncio.run(bare(int(sys.argv[2]), sys.argv[3]))
