"""What the failure-injection tests share: the services as child processes, RingCentral's steady load,
WebSocket clients that resume with ``since``, injections on a schedule, and the report with its checks.

Processes: two copies of every service, each its own ``python -m gravity_<service>``: registry (one
projection consumer group; the API of copy 0 is what the test and realtime talk to, as through a front),
ingest, fanout (one consumer group) and realtime. RingCentral (the load generator) spreads notifications
over both ingest copies, as a load balancer would, and retries elsewhere when a copy does not answer 200,
as RingCentral retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from tests.simulators.ringcentral import RingCentralSimulator, running_ringcentral
from tests.support import Received, WebhookReceiver, eventually, free_port, running_receiver
from tests.support.processes import Service, started
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from gravity_events import ids

__all__ = ["Chaos", "Injection", "Service", "chaos_run"]

ADMIN_TOKEN = "chaos-admin-token-" + "z" * 16
NAMES = (
    "registry-0",
    "registry-1",
    "ingest-0",
    "ingest-1",
    "fanout-0",
    "fanout-1",
    "realtime-0",
    "realtime-1",
)


@contextlib.asynccontextmanager
async def running_services(infra_env: dict[str, str], logs: Path) -> AsyncIterator[dict[str, Service]]:
    ports = {name: free_port() for name in NAMES}
    common = {
        **os.environ,
        **infra_env,
        "KAFKA_ENABLE_IDEMPOTENCE": "false",
        "GRAVITY_ENV": "development",
        "GRAVITY_ADMIN_TOKEN": ADMIN_TOKEN,
        "GRAVITY_SECRET_KEY": secrets.token_urlsafe(32),
        "GRAVITY_PUBLIC_URL": f"http://127.0.0.1:{ports['ingest-0']}",
        "GRAVITY_REGISTRY_URL": f"http://127.0.0.1:{ports['registry-0']}",
        "GRAVITY_REGISTRY_CONSUMER_GROUP": "chaos-registry-" + secrets.token_hex(4),
        "GRAVITY_FANOUT_CONSUMER_GROUP": "chaos-fanout-" + secrets.token_hex(4),
        # 90 s in all: outlasts a minute of 500s, and each retry falls in its own delay bucket (retry
        # partitions 0, 1, 2); partition 0 also takes the deferred first attempts
        "GRAVITY_FANOUT_RETRY_SCHEDULE": "[5, 15, 70]",
        "GRAVITY_LOG_LEVEL": os.environ.get("CHAOS_LOG_LEVEL", "warning"),
    }
    services = {}
    for name, port in ports.items():
        kind = name.split("-")[0]
        env = {**common, f"GRAVITY_{kind.upper()}_PORT": str(port)}
        services[name] = Service(name, f"gravity_{kind}", port, env, logs / f"{name}.log")
    async with started(services, first="registry-0"):  # it applies the migrations: the others wait
        yield services


@dataclass
class Stream:
    """A WebSocket client that resumes with ``since`` whenever its copy goes away."""

    urls: list[str]
    api_key: str
    ids: list[str] = field(default_factory=list)
    reconnects: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"}
        turn = 0
        while not stop.is_set():
            query = f"?since={self.ids[-1]}" if self.ids else ""
            url = self.urls[turn % len(self.urls)] + query
            try:
                async with connect(url, additional_headers=headers, open_timeout=3) as ws:
                    async for frame in ws:
                        event = orjson.loads(frame)
                        if event["type"] == "sms_inbound":
                            self.ids.append(event["messageId"])
                        if stop.is_set():
                            return
            except (OSError, TimeoutError, ConnectionClosed, InvalidHandshake):
                pass
            if stop.is_set():
                return
            self.reconnects += 1
            turn += 1  # the copy went away: resume on the other one (or the same, restarted)
            await asyncio.sleep(0.2)


IN_FLIGHT = 64
"""Notifications RingCentral has in flight at once, at most (the load's connection pool is this size).
Without the bound, an ingest outage queued every due notification in the HTTP pool, and httpcore assigns
queued requests to connections in time that grows with the queue times the connections: the load
generator itself took the CPU, minutes past the test's timeout in one run."""


@dataclass
class Load:
    """RingCentral: notifications at a steady rate, spread over the ingest copies, retried until 200, at
    most ``IN_FLIGHT`` at once (a notification due while all are busy waits for one, as it would at a
    sender with a bounded pool)."""

    sim: RingCentralSimulator
    subscription_id: str
    ingest_urls: list[str]
    accepted: set[str] = field(default_factory=set)
    retried: int = 0
    given_up: list[str] = field(default_factory=list)
    _slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(IN_FLIGHT))

    async def post(self, client: httpx.AsyncClient, n: int) -> None:
        message = self.sim.add_message(text=f"chaos {n}")
        sub = self.sim.subscriptions[self.subscription_id]
        body = orjson.dumps(self.sim.notification(self.subscription_id, message))
        headers = {"Verification-Token": sub.verification_token, "Content-Type": "application/json"}
        deadline = time.monotonic() + 90
        target = n
        while time.monotonic() < deadline:
            url = self.ingest_urls[target % len(self.ingest_urls)] + "/v1/webhooks/ringcentral"
            try:
                async with self._slots:
                    answer = await client.post(url, content=body, headers=headers)
                if answer.status_code == 200:
                    self.accepted.add(message["id"])
                    return
            except httpx.HTTPError:
                pass
            self.retried += 1
            target += 1
            await asyncio.sleep(0.2)
        self.given_up.append(message["id"])

    async def run(self, rate: int, duration: float) -> None:
        start = time.monotonic()
        tasks = []
        limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
        async with httpx.AsyncClient(timeout=5, limits=limits) as client:
            for n in range(int(rate * duration)):
                due = start + n / rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))  # open loop: keep the schedule
                tasks.append(asyncio.create_task(self.post(client, n)))
            await asyncio.gather(*tasks)


@dataclass(frozen=True)
class Injection:
    """At ``at`` seconds into the load, run ``act`` (blocking calls go to a thread) and log ``what``."""

    at: float
    what: str
    act: Callable[[], Awaitable[None]]


@dataclass
class Chaos:
    """One run's world, handed to the test's injection schedule."""

    services: dict[str, Service]
    receiver: WebhookReceiver
    injected: list[tuple[float, str]] = field(default_factory=list)

    def restart(self, name: str) -> Callable[[], Awaitable[None]]:
        async def act() -> None:
            service = self.services[name]
            await asyncio.to_thread(service.kill)
            service.start()  # restarted at once; it becomes ready on its own

        return act


async def _inject(schedule: list[Injection], start: float, injected: list[tuple[float, str]]) -> None:
    """Each injection at its own time, independently: a slow restart does not postpone the next one."""

    async def one(injection: Injection) -> None:
        await asyncio.sleep(max(0.0, start + injection.at - time.monotonic()))
        began = time.monotonic() - start
        await injection.act()
        injected.append((began, f"{injection.what} (took {time.monotonic() - start - began:.1f} s)"))

    await asyncio.gather(*(one(i) for i in schedule))
    injected.sort()


async def _all_messages(client: httpx.AsyncClient, auth: dict[str, str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 100}
        if cursor:
            params["cursor"] = cursor
        r = await client.get("/v1/sms/messages", params=params, headers=auth)
        assert r.status_code == 200, r.text
        page = r.json()
        out.extend(page["messages"])
        cursor = page["nextCursor"]
        if not cursor:
            return out


async def chaos_run(
    *,
    infra_env: dict[str, str],
    logs: Path,
    rate: int,
    duration: float,
    flaky_for: float,
    schedule: Callable[[Chaos], list[Injection]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Steady load while ``schedule`` injects failures; then settle, print the table and check it."""
    async with (
        running_services(infra_env, logs) as services,
        running_ringcentral() as sim,
        running_receiver() as receiver,
        httpx.AsyncClient(base_url=services["registry-0"].url, timeout=10) as api,
    ):
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        tenant = (await api.post("/v1/tenants", json={"name": "chaos"}, headers=admin)).json()
        auth = {"Authorization": f"Bearer {tenant['apiKey']}"}
        receiver.behave("/flaky", status=500)
        receiver.behave("/hang", hang=True)
        for path in ("/ok", "/flaky", "/hang"):
            r = await api.post(
                "/v1/apps", json={"name": path, "webhookUrl": receiver.url(path)}, headers=auth
            )
            assert r.status_code == 201, r.text
        credentials = {
            "serverUrl": sim.server_url,
            "clientId": sim.client_id,
            "clientSecret": sim.client_secret,
            "jwt": "sim-jwt",
        }
        r = await api.put("/v1/ringcentral/connection", json=credentials, headers=auth)
        assert r.status_code == 200, r.text
        subscription_id = r.json()["subscriptionId"]
        ws_urls = [services[f"realtime-{i}"].url.replace("http", "ws") + "/v1/ws" for i in (0, 1)]
        streams = [Stream(ws_urls, tenant["apiKey"]), Stream(ws_urls[::-1], tenant["apiKey"])]
        probe_id = await _setup_in_force(sim, subscription_id, tenant, receiver, ws_urls)
        stop_streams = asyncio.Event()
        stream_tasks = [asyncio.create_task(s.run(stop_streams)) for s in streams]
        chaos = Chaos(services, receiver)

        async def recover_flaky() -> None:
            receiver.behave("/flaky", status=200)

        plan = [*schedule(chaos), Injection(flaky_for, "/flaky recovers (500 until now)", recover_flaky)]
        load = Load(sim, subscription_id, [services["ingest-0"].url, services["ingest-1"].url])
        start = time.monotonic()
        injector = asyncio.create_task(_inject(plan, start, chaos.injected))
        await load.run(rate, duration)
        await injector
        async with httpx.AsyncClient(timeout=2) as probe:
            for service in services.values():
                await service.ready(probe)  # every restarted copy came back

        expected = {ids.message_id_for(tenant["tenantId"], rc_id) for rc_id in load.accepted}
        # the setup's probe is left out of every count below: it was no part of the load

        def _missing(what: str, found: set[str]) -> None:
            missing = expected - found
            assert not missing, (
                f"{what}: {len(missing)} of {len(expected)} missing, e.g. {sorted(missing)[:3]}"
            )

        async def stored() -> list[dict[str, Any]]:
            messages = [m for m in await _all_messages(api, auth) if m["messageId"] != probe_id]
            _missing("messages API", {m["messageId"] for m in messages})
            return messages

        def delivered(path: str) -> set[str]:
            return {r.headers["webhook-id"] for r in load_requests(path)}

        def load_requests(path: str) -> list[Received]:
            return [r for r in receiver.received(path) if r.headers["webhook-id"] != probe_id]

        def all_delivered() -> bool:
            for path in ("/ok", "/flaky"):
                _missing(f"webhook {path}", delivered(path))
            return True

        def all_streamed() -> bool:
            for i, stream in enumerate(streams):
                _missing(f"WebSocket client {i}", set(stream.ids) - {probe_id})
            return True

        messages: list[dict[str, Any]] = []
        try:
            messages = await eventually(stored, timeout=90, interval=0.5)
            await eventually(all_delivered, timeout=120)
            await eventually(all_streamed, timeout=60)
        finally:  # the table belongs in the CI log whether the test passes or not
            stop_streams.set()
            for task in stream_tasks:
                task.cancel()
            await asyncio.gather(*stream_tasks, return_exceptions=True)
            if not messages:
                with contextlib.suppress(Exception):
                    messages = [m for m in await _all_messages(api, auth) if m["messageId"] != probe_id]
            counts = Counter(m["rcMessageId"] for m in messages)
            rows = [
                _Row(
                    "stored messages (messages API)",
                    expected,
                    {m["messageId"] for m in messages},
                    sum(c - 1 for c in counts.values()),
                ),
                *(
                    _Row(
                        f"webhook {path} (distinct messageIds)",
                        expected,
                        delivered(path),
                        len(load_requests(path)) - len(delivered(path)),
                    )
                    for path in ("/ok", "/flaky")
                ),
                *(
                    _Row(
                        f"WebSocket client {i} ({s.reconnects} resumes)",
                        expected,
                        set(s.ids) - {probe_id},
                        len(s.ids) - len(set(s.ids)),
                    )
                    for i, s in enumerate(streams)
                ),
            ]
            ok_spread = Counter(Counter(r.headers["webhook-id"] for r in load_requests("/ok")).values())
            firsts: dict[str, float] = {}
            twice: Counter[int] = Counter()  # /ok messages received again, by when first received
            for r in load_requests("/ok"):
                first = firsts.setdefault(r.headers["webhook-id"], r.at)
                if first != r.at:
                    twice[int((first - start) // 2) * 2] += 1
            with capsys.disabled():
                print(
                    _report(
                        chaos, load, rate, duration, len(receiver.received("/hang")), rows, ok_spread, twice
                    )
                )

    assert not load.given_up  # every notification was eventually answered 200 by some ingest copy
    assert all(c == 1 for c in counts.values())  # stored exactly once
    assert {ids.message_id_for(tenant["tenantId"], r) for r in counts} == expected  # nothing extra or lost
    for stream in streams:
        # resume with since: no gap. Frames received twice are counted above, not refused: a registry killed
        # between publishing a batch and marking it published publishes it again (at-least-once).
        assert set(stream.ids) - {probe_id} == expected


async def _setup_in_force(
    sim: RingCentralSimulator,
    subscription_id: str,
    tenant: dict[str, Any],
    receiver: WebhookReceiver,
    ws_urls: list[str],
) -> str:
    """Wait until the new connection, apps and key are in force (the contract allows 5 s each); return the
    messageId of the probe SMS that showed it.

    Ingest accepts the probe once it knows the subscription; the fanout copy that owns the tenant posts it
    to all three apps once it knows them (fanout has no other public signal of the apps it knows); each
    realtime copy takes the key once it knows it.
    """
    probe = sim.add_message(text="setup probe")

    async def accepted() -> bool:
        return (await sim.deliver(subscription_id, probe)).status_code == 200

    await eventually(accepted, timeout=10)
    probe_id = ids.message_id_for(tenant["tenantId"], probe["id"])

    def posted_to_every_app() -> bool:
        return all(
            any(r.headers["webhook-id"] == probe_id for r in receiver.received(path))
            for path in ("/ok", "/flaky", "/hang")
        )

    await eventually(posted_to_every_app, timeout=10)
    headers = {"Authorization": f"Bearer {tenant['apiKey']}"}
    for url in ws_urls:

        async def key_taken(url: str = url) -> bool:
            try:
                async with connect(url, additional_headers=headers, open_timeout=3):
                    return True
            except InvalidHandshake:
                return False

        await eventually(key_taken, timeout=10)
    return probe_id


@dataclass(frozen=True)
class _Row:
    """One line of the table: what was expected, what was found of it, and what came more than once."""

    what: str
    expected: set[str]
    found: set[str]
    extra: int

    def line(self) -> str:
        want, found = len(self.expected), len(self.found & self.expected)
        return f"{self.what:<40}{want:>10}{found:>10}{want - found:>8}{self.extra:>8}"


def _report(
    chaos: Chaos,
    load: Load,
    rate: int,
    duration: float,
    hang_attempts: int,
    rows: list[_Row],
    ok_spread: Counter[int],
    ok_again: Counter[int],
) -> str:
    """The printed table: the injections, the load, then per observer expected / found / lost / extra."""
    return "\n".join(
        [
            "\nfailure injection: what was injected",
            *(f"  t={at:5.1f}s  {what}" for at, what in chaos.injected),
            f"  notifications sent {int(rate * duration)} at {rate}/s over two ingest copies; answered 200: "
            f"{len(load.accepted)}; re-sent after a refusal or error: {load.retried}; never accepted: "
            f"{len(load.given_up)}; requests to the hanging endpoint: {hang_attempts}",
            f"{'what':<40}{'expected':>10}{'found':>10}{'lost':>8}{'extra':>8}",
            *(row.line() for row in rows),
            "  /ok (never failed), messages by times received: "
            + ", ".join(f"{times} times: {count}" for times, count in sorted(ok_spread.items())),
            "  /ok requests beyond the first, by when the message was first received: "
            + (", ".join(f"t={t}-{t + 2}s: {n}" for t, n in sorted(ok_again.items())) or "none"),
            "  extra: stored rows beyond one per message; webhook requests beyond one per message",
            "  (redeliveries after a failure; for /flaky also its refused attempts); frames received twice",
        ]
    )
