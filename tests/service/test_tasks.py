"""The task supervisor and the readiness it feeds, through a tiny FastAPI app and its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from tests.support.waits import eventually

from gravity_service import OK, Supervisor, health_router, on_task_failure


class Loop:
    """A stand-in for a consumer loop: runs until its stop flag, or raises when told to break."""

    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self.broken = asyncio.Event()
        self.finished_cleanly = False

    def stop(self) -> None:
        self.stopping.set()

    async def run(self) -> None:
        stop, broke = asyncio.ensure_future(self.stopping.wait()), asyncio.ensure_future(self.broken.wait())
        try:
            await asyncio.wait({stop, broke}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            broke.cancel()
        if self.broken.is_set():
            raise RuntimeError("the loop broke")
        self.finished_cleanly = True


def _app(loop: Loop, supervisor: Supervisor, *, warmed_up: asyncio.Event) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        supervisor.start("loop", loop.run(), stop=loop.stop)
        try:
            yield
        finally:
            await supervisor.stop()

    app = FastAPI(lifespan=lifespan)
    checks = {"warmup": lambda: OK if warmed_up.is_set() else "warming up", "async": _async_ok}
    app.include_router(health_router(checks, supervisor=supervisor, extra=lambda: {"loops": 1}))
    return app


async def _async_ok() -> str:
    await asyncio.sleep(0)
    return OK


@contextlib.asynccontextmanager
async def _running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            yield client


async def _status(client: httpx.AsyncClient) -> int:
    return (await client.get("/readyz")).status_code


async def test_ready_when_checks_pass_and_a_clean_stop_is_no_failure() -> None:
    loop, supervisor, warmed_up = Loop(), Supervisor(), asyncio.Event()
    async with _running(_app(loop, supervisor, warmed_up=warmed_up)) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        r = await client.get("/readyz")
        assert r.status_code == 503
        assert r.json() == {"status": "unavailable", "checks": {"warmup": "warming up", "async": "ok"}}
        warmed_up.set()
        r = await client.get("/readyz")
        assert r.status_code == 200 and r.json() == {"status": "ok", "loops": 1}
    assert loop.finished_cleanly  # stop() used the loop's own stop before any cancellation
    assert supervisor.ok and supervisor.failures == {}


async def test_a_task_that_raises_is_logged_and_turns_readiness_503(caplog: pytest.LogCaptureFixture) -> None:
    loop, supervisor, warmed_up = Loop(), Supervisor(), asyncio.Event()
    warmed_up.set()
    heard: list[str] = []
    with on_task_failure(heard.append):
        async with _running(_app(loop, supervisor, warmed_up=warmed_up)) as client:
            assert await _status(client) == 200
            loop.broken.set()
            await eventually(lambda: _is_503(client), timeout=5)
            r = await client.get("/readyz")
            assert r.json()["checks"] == {"warmup": "ok", "async": "ok", "loop": "failed: RuntimeError"}
            assert (await client.get("/healthz")).status_code == 200  # alive, just not ready
    assert heard == ["loop"] and not supervisor.ok
    [record] = [r for r in caplog.records if r.name == "gravity_service.tasks" and r.levelno == logging.ERROR]
    assert "'loop'" in record.getMessage() and record.exc_info is not None
    assert str(record.exc_info[1]) == "the loop broke"


async def _is_503(client: httpx.AsyncClient) -> bool:
    return await _status(client) == 503


async def test_a_task_that_returns_or_is_cancelled_while_running_has_failed() -> None:
    supervisor = Supervisor()
    ended = supervisor.start("returns", asyncio.sleep(0))
    waiting = supervisor.start("cancelled", asyncio.Event().wait())
    waiting.cancel()
    await asyncio.wait({ended, waiting})
    await eventually(lambda: len(supervisor.failures) == 2, timeout=5)
    assert supervisor.failures == {"returns": "returned", "cancelled": "cancelled"}
    await supervisor.stop()


async def test_stop_cancels_tasks_without_a_stop_callback_and_records_errors_raised_while_stopping() -> None:
    supervisor = Supervisor(grace_seconds=5)
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def waits_forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def fails_on_stop(flag: asyncio.Event) -> None:
        await flag.wait()
        raise OSError("could not commit")

    flag = asyncio.Event()
    supervisor.start("forever", waits_forever())
    supervisor.start("commit", fails_on_stop(flag), stop=flag.set)
    with pytest.raises(ValueError, match="already running"):
        supervisor.start("forever", waits_forever())
    await eventually(started.is_set, timeout=5)
    await supervisor.stop()
    assert cancelled.is_set()
    assert supervisor.failures == {"commit": "failed: OSError"}  # cancelling on stop is no failure


async def test_stop_gives_up_on_a_task_that_ignores_its_stop_callback_by_cancelling_it() -> None:
    supervisor = Supervisor(grace_seconds=0.2)
    task = supervisor.start("deaf", asyncio.Event().wait(), stop=lambda: None)
    await supervisor.stop()
    assert task.cancelled() and supervisor.ok
