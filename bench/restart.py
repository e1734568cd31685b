"""``make run`` restarted on a data folder that holds many messages of one tenant (durable engine).

1. ``gravity-dev run`` on a fresh data folder; one tenant, one app, ``BENCH_RESTART_MESSAGES`` (default
   50,000) notifications sent through ingest, 32 at a time, until every one reached the webhook.
2. Ctrl-C (SIGINT), then ``gravity-dev run`` again on the same folder with
   ``GRAVITY_DEV_REPACK_THRESHOLD`` as the environment has it: start to banner (the repack at start, if a
   partition is past the threshold, is part of it), what the repack reported, and POST → webhook of new
   notifications, one at a time.

Not part of the default ``make bench`` (it takes minutes): ``python -m bench restart``.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from tests.support import free_port

from bench.common import ROOT, machine_facts, summary_ms
from bench.ingest import notification
from bench.stack import ENGINE, Receiver, Stack, _setup, _warm

MESSAGES = int(os.environ.get("BENCH_RESTART_MESSAGES", "50000"))
PROBES = 20
"""New notifications after the restart, each sent once the one before reached the webhook."""


async def _seed(url: str, sub_id: str, headers: dict[str, str], prefix: str, count: int) -> float:
    """Send ``count`` notifications, 32 at a time, each until ingest answers 200; the seconds it took."""
    started = time.monotonic()
    todo = iter(range(count))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as session:

        async def worker() -> None:
            for i in todo:
                body = notification(sub_id, f"{prefix}{i}")
                while True:
                    async with session.post(url, data=body, headers=headers) as resp:
                        await resp.read()
                        if resp.status == 200:
                            break
                    await asyncio.sleep(0.05)

        await asyncio.gather(*(worker() for _ in range(32)))
    return time.monotonic() - started


async def _wait_for(receiver: Receiver, prefix: str, count: int, timeout: float) -> float:
    """Seconds until ``count`` messages of ``prefix`` reached the webhook (raises past ``timeout``)."""
    started = time.monotonic()
    while sum(1 for k in receiver.arrivals if k.startswith(prefix)) < count:
        if time.monotonic() - started > timeout:
            got = sum(1 for k in receiver.arrivals if k.startswith(prefix))
            raise TimeoutError(f"{got} of {count} messages reached the webhook within {timeout:.0f} s")
        await asyncio.sleep(0.2)
    return time.monotonic() - started


async def _probe(url: str, sub_id: str, headers: dict[str, str], receiver: Receiver) -> list[float]:
    """POST → webhook in ms of ``PROBES`` notifications sent one after the other."""
    latencies = []
    async with aiohttp.ClientSession() as session:
        for _ in range(PROBES):
            rc = "r" + secrets.token_hex(6)
            sent = time.time()
            async with session.post(url, data=notification(sub_id, rc), headers=headers) as resp:
                await resp.read()
                assert resp.status == 200, resp.status
            deadline = time.monotonic() + 30
            while rc not in receiver.arrivals and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            if rc in receiver.arrivals:
                latencies.append((receiver.arrivals[rc] - sent) * 1000)
    return latencies


async def run(infra: object) -> str:
    """Measure a restart of the ``make run`` stack on a full data folder (``infra`` is not used)."""
    receiver = Receiver()
    hook_port = free_port()
    runner = await receiver.start(hook_port)
    try:
        with tempfile.TemporaryDirectory(prefix="gravity-bench-restart-") as tmp:
            data = Path(tmp)
            stack = Stack(data)
            try:
                admin = await stack.wait_up()
                hook = f"http://127.0.0.1:{hook_port}/hook"
                _, sub_id, headers = await _setup(stack, admin, hook)
                url = f"{stack.url('ingest')}/v1/webhooks/ringcentral"
                await _warm(url, sub_id, headers, receiver)
                prefix = "s" + secrets.token_hex(4)
                sent_s = await _seed(url, sub_id, headers, prefix, MESSAGES)
                drained_s = await _wait_for(receiver, prefix, MESSAGES, timeout=1800)
            finally:
                stack.stop()
            (data / "stack.log").rename(data / "first-run.log")
            stack = Stack(data)
            try:
                started = time.monotonic()
                await stack.wait_up(timeout=1800)  # the repack at start is part of it
                up_s = time.monotonic() - started
                url = f"{stack.url('ingest')}/v1/webhooks/ringcentral"
                first_ms = await _warm(url, sub_id, headers, receiver, rc="f" + secrets.token_hex(6))
                probes = await _probe(url, sub_id, headers, receiver)
            finally:
                stack.stop()
            log = (data / "stack.log").read_text(errors="replace")
    finally:
        await runner.cleanup()
    repacked = [line.strip() for line in log.splitlines() if re.match(r"\s*repack", line)]
    threshold = os.environ.get("GRAVITY_DEV_REPACK_THRESHOLD", "2000 (default)")
    return "\n".join(
        [
            "## `make run` restarted on a full data folder (durable engine)",
            "",
            f"Machine: {machine_facts()}. Broker: {ENGINE}. Repack threshold: {threshold} batches.",
            "",
            "| measurement | figure |",
            "| --- | --- |",
            f"| {MESSAGES:,} notifications of one tenant through ingest, 32 at a time | {sent_s:.0f} s "
            f"({MESSAGES / sent_s:,.0f} req/s); all at the webhook {drained_s:.0f} s after the last "
            "was sent |",
            f"| restart: start to banner | {up_s:.1f} s |",
            f"| restart: what the repack at start said | {'; '.join(repacked) or 'nothing (no repack)'} |",
            f"| after the banner: first notification POST → webhook, retried until ingest takes it | "
            f"{first_ms:.0f} ms (goal ≤ 2 s) |",
            f"| then POST → webhook, {PROBES} notifications one at a time | {summary_ms(probes)}; "
            f"missing {PROBES - len(probes)} |",
            "",
        ]
    )


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from bench.__main__ import main

    main(["restart"])
