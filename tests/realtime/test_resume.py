"""Resume with ``since``: history streamed a page at a time from the registry, bounded, and no frame twice
on one connection, neither across pages, nor at the seam with the live stream, nor when a batch is
published again."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from tests.realtime.harness import (
    Registry,
    close_code,
    hello,
    next_frames,
    realtime_settings,
    running_realtime,
)
from tests.support import TopicTail, eventually, serve

from gravity_events import topics
from gravity_events.codec import RECEIVED_AT_HEADER, encode, encode_headers
from gravity_events.ids import format_timestamp
from gravity_events.kafka import make_producer
from gravity_events.models import SmsInbound

LIMIT = 5


class PagingProxy:
    """A loopback HTTP front for the registry that can hold back every page after the first of a
    resume (requests with a ``cursor``), to show what realtime sends before it has read them."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.gate = asyncio.Event()
        self.gate.set()
        self.held = 0
        self.app = Starlette(routes=[Route("/{path:path}", self.forward)])

    async def forward(self, request: Request) -> Response:
        if "cursor" in request.query_params and not self.gate.is_set():
            self.held += 1
            await self.gate.wait()
        async with httpx.AsyncClient(base_url=self.upstream) as http:
            r = await http.get(
                request.url.path,
                params=list(request.query_params.multi_items()),
                headers={"Authorization": request.headers.get("authorization", "")},
            )
        return Response(r.content, r.status_code, media_type=r.headers.get("content-type"))


@pytest.fixture(scope="module")
async def registry(
    kafka_settings: Any, make_database: Callable[[], Awaitable[str]]
) -> AsyncIterator[Registry]:
    async with Registry.running(kafka_settings, make_database) as registry:
        yield registry


@pytest.fixture(scope="module")
async def proxied(registry: Registry) -> AsyncIterator[tuple[PagingProxy, int]]:
    """A realtime copy that reads history through a :class:`PagingProxy`."""
    proxy = PagingProxy(registry.url)
    async with serve(proxy.app) as proxy_port:
        settings = realtime_settings(registry.kafka, f"http://127.0.0.1:{proxy_port}")
        async with running_realtime(settings) as (_, port):
            yield proxy, port


@pytest.fixture(scope="module")
async def bounded(registry: Registry) -> AsyncIterator[int]:
    """A realtime copy that streams at most :data:`LIMIT` history messages per resume."""
    settings = realtime_settings(registry.kafka, registry.url, GRAVITY_REALTIME_MAX_RESUME_MESSAGES=LIMIT)
    async with running_realtime(settings) as (_, port):
        yield port


def _ids(frames: list[dict[str, Any]]) -> list[str]:
    return [f["messageId"] for f in frames]


async def _connect_when_known(url: str, key: str) -> Any:
    """Connect once realtime has the new key (the first try may be refused while it propagates)."""

    async def attempt() -> Any:
        with contextlib.suppress(Exception):
            return await hello(url, key)
        return None

    return await eventually(attempt, timeout=10)


@pytest.mark.timeout(180)
async def test_history_is_streamed_page_by_page_then_live_without_gap_or_duplicate(
    registry: Registry, proxied: tuple[PagingProxy, int]
) -> None:
    proxy, port = proxied
    tenant = await registry.tenant()
    stored = await registry.stored(tenant, len(await registry.send_sms(tenant["tenantId"], 250)))
    url = f"ws://127.0.0.1:{port}/v1/ws"
    await (await _connect_when_known(url, tenant["apiKey"])).close()
    proxy.gate.clear()  # the registry answers the first page; every later one waits
    try:
        ws = await hello(f"{url}?since={stored[0]}&token={tenant['apiKey']}")
        assert (
            _ids(await next_frames(ws, 100)) == stored[1:101]
        )  # the first page, sent before the second is read
        await eventually(lambda: proxy.held == 1, timeout=10)
        live = await registry.send_sms(tenant["tenantId"], 3)  # published while the resume is under way
        await registry.stored(tenant, len(stored) + 3)
    finally:
        proxy.gate.set()
    rest = _ids(await next_frames(ws, len(stored) - 101 + 3))
    assert rest == stored[101:] + live  # the remaining pages, then the live stream, in the gateway's order
    [marker] = await registry.send_sms(tenant["tenantId"])
    assert _ids(await next_frames(ws, 1)) == [marker]  # nothing was queued twice behind them
    await ws.close()


async def test_a_resume_further_back_than_the_bound_closes_with_4413_after_it(
    registry: Registry, bounded: int
) -> None:
    url = f"ws://127.0.0.1:{bounded}/v1/ws"
    tenant = await registry.tenant()
    stored = await registry.stored(tenant, len(await registry.send_sms(tenant["tenantId"], LIMIT + 3)))
    await (await _connect_when_known(url, tenant["apiKey"])).close()
    ws = await hello(f"{url}?since={stored[0]}&token={tenant['apiKey']}")
    code, frames = await close_code(ws)
    assert code == 4413 and _ids(frames) == stored[1 : LIMIT + 1]  # the oldest LIMIT, then the close
    # what the client does then: page the messages API from the last one it got, resume from the end
    r = await registry.client.get(
        "/v1/sms/messages", params={"after": frames[-1]["messageId"]}, headers=tenant["auth"]
    )
    caught_up = [m["messageId"] for m in r.json()["messages"]]
    assert caught_up == stored[LIMIT + 1 :]
    ws = await hello(f"{url}?since={caught_up[-1]}&token={tenant['apiKey']}")
    [live] = await registry.send_sms(tenant["tenantId"])
    assert _ids(await next_frames(ws, 1)) == [live]
    await ws.close()
    # exactly the bound is not too far
    ws = await hello(f"{url}?since={stored[3]}&token={tenant['apiKey']}")
    assert _ids(await next_frames(ws, LIMIT)) == [*stored[4:], live]
    [later] = await registry.send_sms(tenant["tenantId"])
    assert _ids(await next_frames(ws, 1)) == [later]
    await ws.close()


async def _publish_records(registry: Registry, records: list[tuple[bytes, bytes | None, list[Any]]]) -> None:
    """Append records (value, key, headers) to ``sms_inbound`` as they are."""
    producer = make_producer(registry.kafka, client_id="tests")
    await producer.start()
    try:
        for value, key, headers in records:
            await producer.send_and_wait(topics.SMS_INBOUND, value, key=key, headers=headers)
    finally:
        await producer.stop()


async def test_the_same_sms_inbound_published_twice_reaches_a_client_once(
    registry: Registry, bounded: int
) -> None:
    url = f"ws://127.0.0.1:{bounded}/v1/ws"
    tenant = await registry.tenant()
    ws = await _connect_when_known(url, tenant["apiKey"])
    event = SmsInbound(
        message_id="msg_" + secrets.token_hex(6),
        from_="+15559876543",
        to="+15551234567",
        body="twice",
        rc_message_id=str(secrets.randbelow(10**15)),
        tenant_id=tenant["tenantId"],
        timestamp=datetime.now(UTC),
    )
    stamp = format_timestamp(datetime.now(UTC) - timedelta(seconds=1))  # before the marker's
    record = (
        encode(event),
        tenant["tenantId"].encode(),
        [*encode_headers(event), (RECEIVED_AT_HEADER, stamp.encode())],
    )
    await _publish_records(registry, [record, record])
    [marker] = await registry.send_sms(tenant["tenantId"])
    assert _ids(await next_frames(ws, 2)) == [event.message_id, marker]
    await ws.close()


async def test_a_batch_published_again_after_a_resume_is_not_sent_again(registry: Registry) -> None:
    """The registry publishes a batch again when it dies between publishing and marking it. A copy that
    started after the batch first went out has not seen it, so only the connection knows it sent those
    messages (from history)."""
    tenant = await registry.tenant()
    since_ms = int(time.time() * 1000)
    first = await registry.stored(tenant, len(await registry.send_sms(tenant["tenantId"], 3)))
    records: dict[str, tuple[bytes, bytes | None, list[Any]]] = {}
    async with TopicTail(registry.kafka, topics.SMS_INBOUND, since=since_ms) as tail:

        async def all_read() -> bool:
            for r in await tail.poll():
                records[orjson.loads(r.value)["messageId"]] = (r.value, r.key, list(r.headers))
            return set(first) <= set(records)

        await eventually(all_read, timeout=15)
    # a copy whose live stream starts after those three were published
    settings = realtime_settings(registry.kafka, registry.url, GRAVITY_REALTIME_START_MARGIN=0)
    async with running_realtime(settings) as (_, port):
        url = f"ws://127.0.0.1:{port}/v1/ws"
        await (await _connect_when_known(url, tenant["apiKey"])).close()
        ws = await hello(f"{url}?since={first[0]}&token={tenant['apiKey']}")
        assert _ids(await next_frames(ws, 2)) == first[1:]  # from history
        [live] = await registry.send_sms(tenant["tenantId"])
        assert _ids(await next_frames(ws, 1)) == [live]
        await _publish_records(registry, [records[m] for m in first[1:]])  # the batch, once more
        [marker] = await registry.send_sms(tenant["tenantId"])
        assert _ids(await next_frames(ws, 1)) == [marker]
        await ws.close()
