"""The stack a user of ``make run`` gets: ``gravity-dev run`` on a fresh data folder (durable broker: Tansu's
S3 engine on SeaweedFS; embedded PostgreSQL), driven over HTTP and WebSocket from outside.

1. Ingest closed loop, 32 connections, 10 s, beside a bare uvicorn endpoint in the same run.
2. 10 notifications/s for 20 s: POST sent → webhook received, and POST sent → WebSocket frame received.
3. 200 notifications/s for 10 s: POST sent → webhook received, and what was not delivered within 30 s.

Every variable of the environment reaches the stack, so a setting can be measured side by side:
``KAFKA_FETCH_MAX_WAIT_MS=100 python -m bench stack``.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiohttp import web
from tests.support import free_port
from websockets.asyncio.client import connect

from bench.common import ROOT, closed_loop, machine_facts, open_loop, service, summary_ms
from bench.ingest import notification

ENGINE = "Tansu S3 engine on SeaweedFS (`make run`)"


class Stack:
    """``gravity-dev run`` in a temporary data folder, stopped with SIGINT like Ctrl-C."""

    def __init__(self, data_dir: Path) -> None:
        self.ports = {name: free_port() for name in ("registry", "ingest", "realtime", "fanout")}
        env = {
            **os.environ,
            "GRAVITY_LOG_LEVEL": os.environ.get("GRAVITY_LOG_LEVEL", "warning"),
            **{f"GRAVITY_{name.upper()}_PORT": str(port) for name, port in self.ports.items()},
        }
        env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
        env.pop("DATABASE_URL", None)
        self.log = data_dir / "stack.log"
        self._out = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gravity_devstack", "run", "--data-dir", str(data_dir)],
            env=env,
            cwd=ROOT,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    async def wait_up(self, timeout: float = 240) -> str:
        """Wait for the banner; return the admin token it prints."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gravity-dev run exited: {self.log.read_text()[-2000:]}")
            found = re.search(r"admin token: (\S+)", self.log.read_text(errors="replace"))
            if found:
                return found.group(1)
            await asyncio.sleep(0.2)
        raise TimeoutError("gravity-dev run did not come up")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out.close()


class Receiver:
    """One webhook endpoint recording each message's first arrival by its ``rcMessageId``."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}

    async def hook(self, request: web.Request) -> web.Response:
        stamp = time.time()
        rc = orjson.loads(await request.read())["rcMessageId"]
        self.arrivals.setdefault(rc, stamp)
        return web.Response(text="ok")

    async def start(self, port: int) -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/hook", self.hook)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner


async def _setup(stack: Stack, admin: str, hook_url: str) -> tuple[dict[str, Any], str, dict[str, str]]:
    """A tenant with one app and a development subscription; the ingest headers to use."""
    auth_admin = {"Authorization": f"Bearer {admin}"}
    async with httpx.AsyncClient(base_url=stack.url("registry"), timeout=30) as reg:
        tenant = (await reg.post("/v1/tenants", json={"name": "bench"}, headers=auth_admin)).json()
        auth = {"Authorization": f"Bearer {tenant['apiKey']}"}
        r = await reg.post("/v1/apps", json={"name": "bench", "webhookUrl": hook_url}, headers=auth)
        assert r.status_code == 201, r.text
        sub_id = "bench-" + secrets.token_hex(4)
        sub = (
            await reg.post(
                "/v1/dev/subscriptions",
                json={"tenantId": tenant["tenantId"], "subscriptionId": sub_id},
                headers=auth_admin,
            )
        ).json()
    headers = {"Content-Type": "application/json", "Verification-Token": sub["verificationToken"]}
    return tenant, sub_id, headers


async def _warm(
    url: str, sub_id: str, headers: dict[str, str], receiver: Receiver, rc: str = "warm"
) -> float:
    """One message ``rc`` through end to end, POSTed until ingest takes it (it knows the subscription) and
    then awaited at the webhook (fanout knows the app); ms from its first POST to its arrival."""
    started = time.time()
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient() as probe:
        while (await probe.post(url, content=notification(sub_id, rc), headers=headers)).status_code != 200:
            if time.monotonic() > deadline:
                raise TimeoutError("ingest never accepted the subscription")
            await asyncio.sleep(0.05)
    while rc not in receiver.arrivals:
        if time.monotonic() > deadline:
            raise TimeoutError(f"message {rc} never reached the webhook")
        await asyncio.sleep(0.005)
    return (receiver.arrivals[rc] - started) * 1000


async def _paced(
    url: str,
    sub_id: str,
    headers: dict[str, str],
    receiver: Receiver,
    *,
    rate: float,
    seconds: float,
    ws_url: str | None = None,
) -> tuple[list[float], list[float], int, int]:
    """POST at ``rate``; latencies to the webhook and (with ``ws_url``) to a WebSocket client, and how many
    of each did not arrive within 30 s."""
    prefix = "p" + secrets.token_hex(4)
    sent: dict[str, float] = {}
    frames: dict[str, float] = {}
    reader: asyncio.Task[None] | None = None
    ws = None
    if ws_url is not None:
        ws = await connect(ws_url, compression=None)
        await ws.recv()  # the connected frame

        async def read() -> None:
            async for raw in ws:
                rc = orjson.loads(raw).get("rcMessageId", "")
                if rc.startswith(prefix):
                    frames.setdefault(rc, time.time())

        reader = asyncio.create_task(read())

    def mark(i: int, t: float) -> None:
        sent[f"{prefix}{i}"] = t

    await open_loop(
        url,
        lambda i: (notification(sub_id, f"{prefix}{i}"), headers),
        rate=rate,
        seconds=seconds,
        on_sent=mark,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (
        any(k not in receiver.arrivals for k in sent) or (ws is not None and len(frames) < len(sent))
    ):
        await asyncio.sleep(0.1)
    if reader is not None and ws is not None:
        reader.cancel()
        await ws.close()
    hooks = [(receiver.arrivals[k] - t) * 1000 for k, t in sent.items() if k in receiver.arrivals]
    socket = [(frames[k] - t) * 1000 for k, t in sent.items() if k in frames]
    missing_ws = len(sent) - len(socket) if ws is not None else 0
    return hooks, socket, len(sent) - len(hooks), missing_ws


async def run(infra: Any) -> str:
    """Measure the ``make run`` stack (the memory-engine infrastructure ``infra`` is not used)."""
    lines = ["## The `make run` stack (durable engine)", "", f"Machine: {machine_facts()}. Broker: {ENGINE}."]
    tuned = {k: v for k, v in os.environ.items() if k.startswith(("KAFKA_", "GRAVITY_DEV_", "GRAVITY_S3_"))}
    if tuned:
        lines.append(
            f"Settings from the environment: {', '.join(f'`{k}={v}`' for k, v in sorted(tuned.items()))}."
        )
    lines.append("")
    bare_port = free_port()
    bare_args = ["bench.bare_app:app", "--port", str(bare_port), "--log-level", "warning"]
    with service("uvicorn", {}, bare_port, args=bare_args):
        bare = await closed_loop(
            f"http://127.0.0.1:{bare_port}/v1/webhooks/ringcentral",
            lambda i: (notification("s", str(i)), {"Content-Type": "application/json"}),
            concurrency=32,
            seconds=10,
        )
    receiver = Receiver()
    hook_port = free_port()
    runner = await receiver.start(hook_port)
    with tempfile.TemporaryDirectory(prefix="gravity-bench-stack-") as tmp:
        stack = Stack(Path(tmp))
        try:
            started = time.monotonic()
            admin = await stack.wait_up()
            up_seconds = time.monotonic() - started
            tenant, sub_id, headers = await _setup(stack, admin, f"http://127.0.0.1:{hook_port}/hook")
            url = f"{stack.url('ingest')}/v1/webhooks/ringcentral"
            await _warm(url, sub_id, headers, receiver)
            ws_url = f"ws://127.0.0.1:{stack.ports['realtime']}/v1/ws?token={tenant['apiKey']}"
            slow = await _paced(url, sub_id, headers, receiver, rate=10, seconds=20, ws_url=ws_url)
            prefix = "c" + secrets.token_hex(4)
            ingest = await closed_loop(
                url, lambda i: (notification(sub_id, f"{prefix}{i}"), headers), concurrency=32, seconds=10
            )
            await _drain(receiver, prefix, ingest.requests - ingest.errors)
            fast = await _paced(url, sub_id, headers, receiver, rate=200, seconds=10)
        finally:
            stack.stop()
            await runner.cleanup()
    ratio = ingest.rate / bare.rate if bare.rate else float("nan")
    hooks10, ws10, miss10, miss_ws10 = slow
    hooks200, _, miss200, _ = fast
    lines += [
        "| measurement | figure |",
        "| --- | --- |",
        f"| `gravity-dev run` on a fresh data folder: start to banner | {up_seconds:.1f} s |",
        f"| bare uvicorn endpoint, closed loop C=32, 10 s | {bare.rate:,.0f} req/s; "
        f"{summary_ms(bare.latencies_ms)} |",
        f"| ingest, verified SMS, closed loop C=32, 10 s | {ingest.rate:,.0f} req/s ({ratio:.0%} of bare; "
        f"goal ≥ 1,000 req/s); {summary_ms(ingest.latencies_ms)}; errors {ingest.errors} |",
        f"| POST → webhook, 10 notifications/s, 20 s | {summary_ms(hooks10)}; missing {miss10} "
        "(goal p99 ≤ 150 ms) |",
        f"| POST → WebSocket frame, 10 notifications/s, 20 s | {summary_ms(ws10)}; missing {miss_ws10} "
        "(goal p99 ≤ 150 ms) |",
        f"| POST → webhook, 200 notifications/s, 10 s | {summary_ms(hooks200)}; not delivered within 30 s: "
        f"{miss200} (goal p99 ≤ 500 ms) |",
        "",
    ]
    return "\n".join(lines)


async def _drain(receiver: Receiver, prefix: str, expected: int, timeout: float = 180) -> None:
    """Wait until the closed loop's messages reached the webhook, so the next run measures the path, not
    the backlog."""
    deadline = time.monotonic() + timeout
    while (
        sum(1 for k in receiver.arrivals if k.startswith(prefix)) < expected and time.monotonic() < deadline
    ):
        await asyncio.sleep(0.2)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from bench.__main__ import main

    main(["stack"])
