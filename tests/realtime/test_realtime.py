"""Realtime end to end: registry (real HTTP, real database) → sms_inbound → realtime → WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from tests.registry.conftest import ADMIN_TOKEN, registry_settings
from tests.support import (
    SMS_INBOUND_FIELDS,
    TopicTail,
    eventually,
    notification,
    publish_events,
    raw_event,
    serve,
    wait_ready,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gravity_events import ids, topics
from gravity_events.codec import encode, encode_headers
from gravity_events.kafka import make_producer
from gravity_events.models import RcNotification, SmsInbound
from gravity_events.settings import KafkaSettings
from gravity_realtime.app import create_app as create_realtime
from gravity_realtime.protocol import AbortableWebSocketProtocol
from gravity_realtime.settings import Settings as RealtimeSettings
from gravity_registry.app import create_app as create_registry

WS_CONFIG = {"ws": AbortableWebSocketProtocol, "ws_per_message_deflate": False}


@dataclass
class Stack:
    registry: httpx.AsyncClient
    registry_port: int
    realtime_ports: list[int]
    kafka: KafkaSettings
    database_url: str
    last_received: datetime | None = None
    sent: list[tuple[str, str, int]] = field(default_factory=list)
    """(tenantId, messageId, epoch ms) of every raw notification appended, for :meth:`trace`."""
    keys: dict[str, str] = field(default_factory=dict)

    def _next_received_at(self) -> datetime:
        """Strictly increasing receivedAt, as one ingest copy stamps (the registry may still publish a
        message stamped earlier after one stamped later, when their raw partitions reach it apart)."""
        now = ids.utcnow()
        if self.last_received is not None and now <= self.last_received:
            now = self.last_received + timedelta(milliseconds=1)
        self.last_received = now
        return now

    async def tenant(self) -> dict[str, Any]:
        r = await self.registry.post(
            "/v1/tenants", json={"name": "rt"}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        tenant = dict(r.json())
        self.keys[tenant["tenantId"]] = tenant["apiKey"]
        return tenant

    def url(self, query: str = "", copy: int = 0) -> str:
        return f"ws://127.0.0.1:{self.realtime_ports[copy]}/v1/ws{query}"

    async def send_sms(self, tenant_id: str, n: int = 1) -> list[str]:
        """Append ``n`` raw notifications for the tenant; return their messageIds."""
        events = []
        for _ in range(n):
            body = notification("sub-rt")
            events.append(
                RcNotification(
                    tenant_id=tenant_id,
                    subscription_id="sub-rt",
                    rc_message_id=body["body"]["id"],
                    received_at=self._next_received_at(),
                    notification=body,
                )
            )
        return await self.publish_raw(events)

    async def publish_raw(self, events: list[RcNotification]) -> list[str]:
        """Append raw notifications as ingest would; return their messageIds."""
        now = int(time.time() * 1000)
        self.sent += [(e.tenant_id, ids.message_id_for(e.tenant_id, e.rc_message_id), now) for e in events]
        await publish_events(self.kafka, topics.RC_RAW, *((e.rc_message_id, e) for e in events))
        return [ids.message_id_for(e.tenant_id, e.rc_message_id) for e in events]

    async def trace(self, seconds: float = 120.0) -> str:
        """Where the messages of the last ``seconds`` are on their way (for a frame that did not come):
        stored by the registry or not, on ``sms_inbound`` or not, and how long after they were sent."""
        since = int(time.time() * 1000 - seconds * 1000)
        recent = [(t, m, at) for t, m, at in self.sent if at >= since]
        if not recent:
            return "no message sent in the last two minutes"
        published: dict[str, tuple[int, int, int]] = {}
        async with TopicTail(self.kafka, topics.SMS_INBOUND, since=min(at for _, _, at in recent)) as tail:
            quiet_since, deadline = time.monotonic(), time.monotonic() + 15
            while (
                time.monotonic() - quiet_since < 2 and time.monotonic() < deadline
            ):  # read until 2 s of nothing
                before = len(tail.records)
                for r in await tail.poll():
                    published.setdefault(
                        orjson.loads(r.value)["messageId"], (r.partition, r.offset, r.timestamp)
                    )
                if len(tail.records) > before:
                    quiet_since = time.monotonic()
        conn = await asyncpg.connect(self.database_url)
        try:
            marked = {
                r["message_id"]: r["published"]
                for r in await conn.fetch(
                    "SELECT message_id, published FROM messages WHERE message_id = ANY($1::text[])",
                    [m for _, m, _ in recent],
                )
            }
        finally:
            await conn.close()
        lines = []
        for tenant_id, message_id, at in recent:
            r = await self.registry.get(
                f"/v1/sms/messages/{message_id}",
                headers={"Authorization": f"Bearer {self.keys.get(tenant_id)}"},
            )
            stored = (
                f"stored, receivedAt {r.json()['receivedAt']}"
                if r.status_code == 200
                else f"GET {r.status_code}"
            )
            hit = published.get(message_id)
            where = f"on sms_inbound {hit[0]}/{hit[1]} +{hit[2] - at} ms" if hit else "NOT on sms_inbound"
            where += f" (row published={marked.get(message_id)})"
            lines.append(f"{message_id} sent {at}: {stored}; {where}")
        lacking = [line for line in lines if "NOT" in line or "GET" in line]
        return (
            f"of {len(lines)} messages sent in the last {seconds:.0f} s, {len(lacking)} not stored or not published"
            f" (now {int(time.time() * 1000)}):\n" + "\n".join((lacking or lines)[-15:])
        )


def _realtime_settings(kafka: KafkaSettings, registry_port: int, **overrides: Any) -> RealtimeSettings:
    return RealtimeSettings(
        KAFKA_BOOTSTRAP_SERVERS=kafka.kafka_bootstrap_servers,
        KAFKA_ENABLE_IDEMPOTENCE=False,
        GRAVITY_REGISTRY_URL=f"http://127.0.0.1:{registry_port}",
        **overrides,
    )


@pytest.fixture(scope="module")
async def stack(
    kafka_settings: KafkaSettings, make_database: Callable[[], Awaitable[str]]
) -> AsyncIterator[Stack]:
    database_url = await make_database()
    registry_app = create_registry(registry_settings(kafka_settings, database_url))
    async with serve(registry_app) as reg_port, contextlib.AsyncExitStack() as copies:
        ports = [
            await copies.enter_async_context(
                serve(create_realtime(_realtime_settings(kafka_settings, reg_port)), **WS_CONFIG)
            )
            for _ in range(2)
        ]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{reg_port}") as client:
            for port in ports:
                await wait_ready(f"http://127.0.0.1:{port}", client=client, timeout=30)
            await wait_ready(client=client, timeout=30)
            yield Stack(client, reg_port, ports, kafka_settings, database_url)


async def _connect(url: str, key: str | None = None, **kw: Any) -> ClientConnection:
    """Connect (retrying while the new key propagates) and consume the connected frame."""
    headers = {"Authorization": f"Bearer {key}"} if key else None

    async def attempt() -> ClientConnection | None:
        try:
            return await connect(url, additional_headers=headers, **kw)
        except InvalidStatus as exc:
            if exc.response.status_code == 401:
                return None
            raise

    ws = await eventually(attempt, timeout=5)
    hello = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
    assert hello["type"] == "connected"
    return ws


FRAME_DEADLINE = 30.0
"""Per frame. The path (raw topic → projection → sms_inbound → realtime) takes ~20 ms here. In full CI runs
it stalled past 30 s when realtime started "from now" by replaying a huge sms_inbound partition (see
``gravity_events.kafka.offsets_at`` and the README's Tansu notes); a frame that does not come fails with
:meth:`Stack.trace`, which says where the recent messages are."""


async def _frames(ws: ClientConnection, n: int, stack: Stack) -> list[dict[str, Any]]:
    """The next ``n`` frames; when one does not come, fail with where the recent messages are."""
    frames = []
    for i in range(n):
        try:
            frames.append(orjson.loads(await asyncio.wait_for(ws.recv(), FRAME_DEADLINE)))
        except TimeoutError:
            trace = await stack.trace()
            raise AssertionError(
                f"frame {i + 1} of {n} not received within {FRAME_DEADLINE} s; {trace}"
            ) from None
    return frames


async def test_both_auth_styles_and_the_connected_frame(stack: Stack) -> None:
    tenant = await stack.tenant()
    async with await _connect(stack.url(), tenant["apiKey"]) as ws:
        assert ws.response.status_code == 101
    ws = await _connect(stack.url(f"?token={tenant['apiKey']}"))
    await ws.close()


@pytest.mark.parametrize("query", ["", "?token=gsk_nope", "?token="])
async def test_bad_or_missing_key_is_refused_with_401(stack: Stack, query: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await connect(stack.url(query))
    assert refused.value.response.status_code == 401


async def test_tenants_receive_only_their_own_messages_byte_identical(stack: Stack) -> None:
    a, b = await stack.tenant(), await stack.tenant()
    a_socks = [await _connect(stack.url(copy=i % 2), a["apiKey"]) for i in range(3)]
    b_socks = [await _connect(stack.url(copy=i % 2), b["apiKey"]) for i in range(2)]
    a_ids = await stack.send_sms(a["tenantId"], 3)
    b_ids = await stack.send_sms(b["tenantId"], 2)
    for ws in a_socks:
        frames = await _frames(ws, 3, stack)
        assert {f["messageId"] for f in frames} == set(a_ids)
        assert all(f["tenantId"] == a["tenantId"] and f["type"] == "sms_inbound" for f in frames)
        assert tuple(frames[0]) == SMS_INBOUND_FIELDS
    for ws in b_socks:
        assert {f["messageId"] for f in await _frames(ws, 2, stack)} == set(b_ids)
    # nothing else arrives for A (B's messages never do): a marker for A comes next, not a B frame
    [marker] = await stack.send_sms(a["tenantId"], 1)
    for ws in a_socks:
        assert (await _frames(ws, 1, stack))[0]["messageId"] == marker
    for ws in a_socks + b_socks:
        await ws.close()


async def test_revoked_key_closes_its_sockets_and_is_refused(stack: Stack) -> None:
    tenant = await stack.tenant()
    auth = {"Authorization": f"Bearer {tenant['apiKey']}"}
    key = (await stack.registry.post("/v1/api-keys", json={"name": "ws"}, headers=auth)).json()
    ws = await _connect(stack.url(), key["apiKey"])
    other = await _connect(stack.url(), tenant["apiKey"])
    assert (await stack.registry.delete(f"/v1/api-keys/{key['keyId']}", headers=auth)).status_code == 204
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401

    async def refused() -> bool:
        try:
            sock = await connect(stack.url(), additional_headers={"Authorization": f"Bearer {key['apiKey']}"})
            await sock.close()
        except InvalidStatus as exc:
            return exc.response.status_code == 401
        return False

    await eventually(refused, timeout=5)
    [mid] = await stack.send_sms(tenant["tenantId"])  # the tenant's other key still streams
    assert (await _frames(other, 1, stack))[0]["messageId"] == mid
    await other.close()


async def test_resume_with_since_has_no_gap_and_no_duplicate(stack: Stack) -> None:
    tenant = await stack.tenant()
    watcher = await _connect(stack.url(), tenant["apiKey"])
    sent = await stack.send_sms(tenant["tenantId"], 4)
    first = [f["messageId"] for f in await _frames(watcher, 4, stack)]  # the gateway's order is the stream's
    assert set(first) == set(sent)
    # messages keep arriving while the client resumes from the first one
    feeding = asyncio.create_task(_trickle(stack, tenant["tenantId"], 10))
    resumed = await _connect(stack.url(f"?since={first[0]}&token={tenant['apiKey']}"))
    later = await feeding
    expected = first[1:] + later
    got = [f["messageId"] for f in await _frames(resumed, len(expected), stack)]
    assert len(got) == len(set(got)) and set(got) == set(expected)
    assert got[: len(first) - 1] == first[1:]  # history first, oldest first
    await resumed.close()
    await watcher.close()


async def test_a_live_frame_at_or_before_since_is_not_sent_again(stack: Stack) -> None:
    """A client that left a copy resumes on one that is behind: that copy still routes frames the client
    had. The live stream is in the gateway's order, so a frame at or before ``since`` is one of them."""
    tenant = await stack.tenant()
    watcher = await _connect(stack.url(), tenant["apiKey"])
    [since] = await stack.send_sms(tenant["tenantId"])
    await _frames(watcher, 1, stack)
    fresh = await _connect(stack.url(), tenant["apiKey"])  # has sent nothing, so it takes any frame
    resumed = await _connect(stack.url(f"?since={since}&token={tenant['apiKey']}"))
    # what the lagging copy routes next: a message from before `since` (its receivedAt is earlier)
    behind = SmsInbound(
        message_id="msg_" + secrets.token_hex(6),
        from_="+15559876543",
        to="+15551234567",
        body="from before since",
        rc_message_id=str(secrets.randbelow(10**15)),
        tenant_id=tenant["tenantId"],
        timestamp=datetime(2026, 3, 1, tzinfo=UTC),
    )
    producer = make_producer(stack.kafka, client_id="tests")
    await producer.start()
    try:
        headers = [*encode_headers(behind), ("gravity-received-at", b"2026-03-01T00:00:00.000Z")]
        await producer.send_and_wait(
            topics.SMS_INBOUND, encode(behind), key=tenant["tenantId"].encode(), headers=headers
        )
    finally:
        await producer.stop()
    [later] = await stack.send_sms(tenant["tenantId"])
    assert [f["messageId"] for f in await _frames(fresh, 2, stack)] == [behind.message_id, later]  # routed
    # a live connection is sent it (it never had it: a frame published late, out of the gateway's order,
    # must not be lost); a resume takes a frame at or before `since` for one its history covered
    assert [f["messageId"] for f in await _frames(watcher, 2, stack)] == [behind.message_id, later]
    assert [f["messageId"] for f in await _frames(resumed, 1, stack)] == [later]
    await resumed.close()
    await fresh.close()
    await watcher.close()


async def _trickle(stack: Stack, tenant_id: str, n: int) -> list[str]:
    out: list[str] = []
    for _ in range(n):
        out += await stack.send_sms(tenant_id)
    return out


async def test_unknown_or_foreign_since_is_404(stack: Stack) -> None:
    a, b = await stack.tenant(), await stack.tenant()
    b_ws = await _connect(stack.url(), b["apiKey"])
    [b_msg] = await stack.send_sms(b["tenantId"])
    await _frames(b_ws, 1, stack)  # stored and published
    await b_ws.close()
    for since in ("msg_000000000000", b_msg):
        with pytest.raises(InvalidStatus) as refused:
            await connect(stack.url(f"?since={since}&token={a['apiKey']}"))
        assert refused.value.response.status_code == 404


async def test_readyz_reports_connections(stack: Stack) -> None:
    r = await stack.registry.get(f"http://127.0.0.1:{stack.realtime_ports[0]}/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ok"


__all__ = ["secrets"]


@pytest.mark.timeout(90)
async def test_restart_closes_with_1012_and_the_client_resumes_elsewhere(stack: Stack) -> None:
    tenant = await stack.tenant()
    settings = _realtime_settings(stack.kafka, stack.registry_port)
    async with serve(create_realtime(settings), **WS_CONFIG) as port:
        await wait_ready(f"http://127.0.0.1:{port}", client=stack.registry, timeout=30)
        ws = await _connect(f"ws://127.0.0.1:{port}/v1/ws", tenant["apiKey"])
        [first] = await stack.send_sms(tenant["tenantId"])
        assert (await _frames(ws, 1, stack))[0]["messageId"] == first
    # the copy has shut down (SIGTERM path): its clients were told to go elsewhere
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    watcher = await _connect(stack.url(), tenant["apiKey"])  # shows the order the gateway published in
    missed = await stack.send_sms(tenant["tenantId"], 3)  # while the client was away
    resumed = await _connect(stack.url(f"?since={first}&token={tenant['apiKey']}"))
    later = await stack.send_sms(tenant["tenantId"], 2)
    got = [f["messageId"] for f in await _frames(resumed, 5, stack)]
    assert got == [f["messageId"] for f in await _frames(watcher, 5, stack)]
    assert set(got) == set(missed + later)
    await resumed.close()
    await watcher.close()


async def test_a_client_that_stops_reading_is_cut_off_while_others_keep_receiving(stack: Stack) -> None:
    """A raw client with a 4 KiB receive buffer completes the handshake and never reads again."""
    import base64
    import socket

    settings = _realtime_settings(
        stack.kafka,
        stack.registry_port,
        GRAVITY_REALTIME_MAX_QUEUED_FRAMES=40,
        GRAVITY_REALTIME_CLOSE_GRACE_SECONDS=1.0,
    )
    app = create_realtime(settings)
    async with serve(app, **WS_CONFIG) as port:  # no force: the slow socket must not hold up shutdown
        async with httpx.AsyncClient() as c:
            await wait_ready(f"http://127.0.0.1:{port}", client=c, timeout=30)
        tenant = await stack.tenant()
        url = f"ws://127.0.0.1:{port}/v1/ws"
        reader = await _connect(url, tenant["apiKey"], max_size=2**20)

        loop = asyncio.get_running_loop()
        slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: small window
        slow.setblocking(False)
        await loop.sock_connect(slow, ("127.0.0.1", port))
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        await loop.sock_sendall(
            slow,
            (
                f"GET /v1/ws?token={tenant['apiKey']} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode(),
        )
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += await loop.sock_recv(slow, 1)
        assert answer.startswith(b"HTTP/1.1 101")
        await eventually(lambda: len(app.state.hub) == 2, timeout=5)
        try:
            big = "x" * 60_000
            sent: list[str] = []
            for _wave in range(10):  # ~18 MB in waves the reading client keeps up with
                events = []
                for _ in range(30):
                    events.append(
                        raw_event(
                            tenant["tenantId"], "sub-rt", received_at=stack._next_received_at(), subject=big
                        )
                    )
                await stack.publish_raw(events)
                frames = await _frames(reader, 30, stack)
                assert {f["rcMessageId"] for f in frames} == {e.rc_message_id for e in events}
                sent += [e.rc_message_id for e in events]
            # the slow one was dropped; the reading one is still connected
            await eventually(lambda: len(app.state.hub) == 1, timeout=15)
            await reader.send("still here")  # the reading client's socket is alive
            # the server ended the slow connection: reading it runs into a reset or EOF after what was
            # already in flight (a live connection would hit the 10 s timeout here instead)
            with contextlib.suppress(ConnectionResetError):
                while await asyncio.wait_for(loop.sock_recv(slow, 65536), 10):
                    pass
        finally:
            slow.close()
            await reader.close()
