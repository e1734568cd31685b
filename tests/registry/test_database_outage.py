"""PostgreSQL goes away and comes back: the API answers 503 in the contract's error shape meanwhile, and
recovers by itself; a notification that arrived during the outage is stored afterwards (nothing lost).

The outage is real at the network level: the registry reaches PostgreSQL through a TCP proxy that the test
cuts (every open connection reset, new ones refused) and restores on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
from asgi_lifespan import LifespanManager
from tests.registry.conftest import ADMIN_TOKEN, registry_settings
from tests.support import assert_error, eventually, free_port, publish_events, raw_event

from gravity_events import ids, topics
from gravity_events.settings import KafkaSettings
from gravity_registry.app import create_app


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to PostgreSQL (TCP or its Unix socket); ``cut()`` resets everything,
    ``restore()`` listens again on the same port."""

    def __init__(self, database_url: str) -> None:
        url = urlsplit(database_url)
        query = parse_qs(url.query)
        socket_dir = query.pop("host", [""])[0]
        self._unix = f"{socket_dir}/.s.PGSQL.{url.port or 5432}" if socket_dir.startswith("/") else None
        self._tcp = (url.hostname or "127.0.0.1", url.port or 5432)
        self.port = free_port()
        userinfo = url.netloc.rsplit("@", 1)[0] + "@" if "@" in url.netloc else ""
        self.url = urlunsplit(
            (url.scheme, f"{userinfo}127.0.0.1:{self.port}", url.path, urlencode(query, doseq=True), "")
        )
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def restore(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()  # a reset, as when the database host goes away
        self._writers.clear()
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self._unix is not None:
                up_reader, up_writer = await asyncio.open_unix_connection(self._unix)
            else:
                up_reader, up_writer = await asyncio.open_connection(*self._tcp)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._writers -= {writer, up_writer}


async def test_the_api_answers_503_while_the_database_is_gone_and_recovers(
    kafka_settings: KafkaSettings, make_database: Callable[[], Awaitable[str]]
) -> None:
    proxy = TcpProxy(await make_database())
    await proxy.restore()
    app = create_app(registry_settings(kafka_settings, proxy.url))
    async with (
        LifespanManager(app, startup_timeout=60) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://registry") as api,
    ):
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        await eventually(lambda: _status(api, "/readyz", {}, 200), timeout=30)
        tenant = (await api.post("/v1/tenants", json={"name": "outage"}, headers=admin)).json()
        auth = {"Authorization": f"Bearer {tenant['apiKey']}"}
        assert (await api.get("/v1/sms/messages", headers=auth)).status_code == 200

        await proxy.cut()
        r = await api.get("/v1/sms/messages", headers=auth)
        assert_error(r, 503, "unavailable")
        assert r.headers["retry-after"] == "1"
        assert (await api.get("/readyz")).status_code == 503
        event = raw_event(tenant["tenantId"], "sub-outage")  # RingCentral's SMS arrives meanwhile
        await publish_events(kafka_settings, topics.RC_RAW, (event.rc_message_id, event))

        await proxy.restore()
        message_id = ids.message_id_for(tenant["tenantId"], event.rc_message_id)
        await eventually(lambda: _status(api, f"/v1/sms/messages/{message_id}", auth, 200), timeout=30)
    await proxy.cut()


async def _status(api: httpx.AsyncClient, path: str, headers: dict[str, str], want: int) -> bool:
    return (await api.get(path, headers=headers)).status_code == want
