"""One tenant cannot exhaust realtime: sockets per key, the size of client frames, and no key in the logs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from tests.realtime.harness import Registry, close_code, hello, realtime_settings, refused, running_realtime
from tests.support import eventually
from websockets.exceptions import InvalidStatus

from gravity_events.settings import KafkaSettings
from gravity_realtime.protocol import AbortableWebSocketProtocol

CAP = 3
FRAME_LIMIT = 4096


@pytest.fixture(scope="module")
async def registry(
    kafka_settings: KafkaSettings, make_database: Callable[[], Awaitable[str]]
) -> AsyncIterator[Registry]:
    async with Registry.running(kafka_settings, make_database) as registry:
        yield registry


@pytest.fixture(scope="module")
async def realtime(registry: Registry) -> AsyncIterator[tuple[Any, int]]:
    settings = realtime_settings(registry.kafka, registry.url, GRAVITY_REALTIME_MAX_CONNECTIONS_PER_KEY=CAP)
    async with running_realtime(settings) as running:
        yield running


async def _known(url: str, key: str) -> None:
    """Wait until realtime has read the key from the change stream."""

    async def accepted() -> bool:
        try:
            ws = await hello(url, key)
        except InvalidStatus:  # refused while the key propagates
            return False
        await ws.close()
        return True

    await eventually(accepted, timeout=10)


async def test_a_key_holds_at_most_the_configured_sockets_and_the_next_is_429(
    registry: Registry, realtime: tuple[Any, int]
) -> None:
    app, port = realtime
    url = f"ws://127.0.0.1:{port}/v1/ws"
    tenant = await registry.tenant()
    await _known(url, tenant["apiKey"])
    await eventually(lambda: len(app.state.hub) == 0, timeout=5)
    socks = await asyncio.gather(*(hello(url, tenant["apiKey"]) for _ in range(CAP)))
    status, headers, body = await refused(url, tenant["apiKey"])
    assert status == 429 and body["error"]["code"] == "too_many_connections", body
    assert int(headers["retry-after"]) > 0 and body["error"]["details"] == {"limit": CAP}
    # so is the browser style, and the sockets already open are unaffected
    assert (await refused(f"{url}?token={tenant['apiKey']}"))[0] == 429
    await socks[0].ping()
    # the limit is per key: another key of the same tenant connects
    other = (await registry.client.post("/v1/api-keys", json={"name": "2"}, headers=tenant["auth"])).json()
    await _known(url, other["apiKey"])
    extra = await hello(url, other["apiKey"])
    # a closed socket frees its place
    await socks.pop().close()
    await eventually(lambda: len(app.state.hub) == CAP, timeout=5)  # CAP - 1 of the first key, 1 of the other
    again = await hello(url, tenant["apiKey"])
    for ws in [*socks, extra, again]:
        await ws.close()


async def test_concurrent_upgrades_cannot_overshoot_the_limit(
    registry: Registry, realtime: tuple[Any, int]
) -> None:
    _, port = realtime
    url = f"ws://127.0.0.1:{port}/v1/ws"
    tenant = await registry.tenant()
    await _known(url, tenant["apiKey"])

    async def attempt() -> Any:
        try:
            return await hello(url, tenant["apiKey"])
        except InvalidStatus as exc:  # a refusal is one of the expected outcomes
            return exc

    outcomes = await asyncio.gather(*(attempt() for _ in range(CAP * 3)))
    opened = [o for o in outcomes if not isinstance(o, InvalidStatus)]
    statuses = {o.response.status_code for o in outcomes if isinstance(o, InvalidStatus)}
    assert len(opened) == CAP and statuses == {429}, outcomes
    for ws in opened:
        await ws.close()


@pytest.mark.parametrize(
    "server", ["entry point options", "uvicorn's default message size"], ids=["ws_max_size", "app_check"]
)
async def test_a_client_frame_larger_than_the_limit_closes_with_1009(
    registry: Registry, realtime: tuple[Any, int], server: str
) -> None:
    """With the entry point's options the server refuses the frame (``ws_max_size``); on a server left at
    uvicorn's 16 MiB the app itself closes with 1009."""
    tenant = await registry.tenant()
    settings = realtime_settings(
        registry.kafka, registry.url, GRAVITY_REALTIME_MAX_CLIENT_FRAME_BYTES=FRAME_LIMIT
    )
    config: dict[str, Any] = {}
    if server != "entry point options":
        config = {"ws": AbortableWebSocketProtocol, "ws_max_size": 16 * 1024 * 1024}
    async with running_realtime(settings, **config) as (_, port):
        url = f"ws://127.0.0.1:{port}/v1/ws"
        await _known(url, tenant["apiKey"])
        ws = await hello(url, tenant["apiKey"])
        await ws.send("x" * FRAME_LIMIT)  # at the limit: ignored, still open
        await ws.ping()
        await ws.send("x" * 64 * 1024)
        code, frames = await close_code(ws)
        assert code == 1009 and frames == []


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def captured() -> Iterator[_Capture]:
    """Every line uvicorn's loggers produce at INFO and above during the test."""
    capture = _Capture()
    loggers = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "uvicorn.access")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.INFO)
        logger.addHandler(capture)
    try:
        yield capture
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(capture)
            logger.setLevel(level)


async def test_no_api_key_reaches_the_logs(
    registry: Registry, realtime: tuple[Any, int], captured: _Capture
) -> None:
    _, port = realtime
    url = f"ws://127.0.0.1:{port}/v1/ws"
    tenant = await registry.tenant()
    key = tenant["apiKey"]
    await _known(url, key)
    captured.lines.clear()
    ws = await hello(f"{url}?token={key}")  # accepted
    await ws.close()
    await refused(f"{url}?since=msg_000000000000&token={key}")  # 404
    await refused(f"{url}?token={key}x&since=x")  # 401, the token not last in the query
    async with httpx.AsyncClient() as http:  # a plain HTTP request for the same path
        await http.get(f"http://127.0.0.1:{port}/v1/ws?token={key}")
    await eventually(lambda: sum("token=[redacted]" in line for line in captured.lines) >= 3, timeout=5)
    assert not [line for line in captured.lines if key in line], captured.lines
    assert not [line for line in captured.lines if key[4:20] in line]
