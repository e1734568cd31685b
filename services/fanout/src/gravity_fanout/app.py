"""The fanout process: the lifespan owns the producer, the client pool, the apps table, the lanes and the
four loops (apps change stream, inbound, retries, manual requests); HTTP serves health and readiness only
(contract: port 8003).

Where each part lives: :mod:`~gravity_fanout.apps` (the apps table), :mod:`~gravity_fanout.clients`
(per-app HTTP pools), :mod:`~gravity_fanout.handlers` (one attempt and its records),
:mod:`~gravity_fanout.schedule` (retry delays and partitions), :mod:`~gravity_fanout.lanes` (per-app
isolation), :mod:`~gravity_fanout.windows` (in-flight windows and commit points),
:mod:`~gravity_fanout.consumer` (``sms_inbound``), :mod:`~gravity_fanout.retries` (the retry queue),
:mod:`~gravity_fanout.requests` (manual re-sends), :mod:`~gravity_fanout.health` (routes).

Metrics (``GET /metrics``, :class:`~gravity_service.metrics.FanoutMetrics`) count every attempt, what is in
flight and due, and the lag of every consumer; the object is ``app.state.metrics``.

The loops run under a :class:`~gravity_service.Supervisor`: one that dies is logged with its traceback,
turns ``/readyz`` 503 and makes ``gravity_service.serve`` exit non-zero, so the process is restarted.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI

from gravity_events import topics
from gravity_events.kafka import EventConsumer, ensure_topics, make_producer
from gravity_fanout.apps import AppTable, make_apps_reader
from gravity_fanout.clients import USER_AGENT, make_client_pool
from gravity_fanout.consumer import InboundConsumer
from gravity_fanout.handlers import Deliverer
from gravity_fanout.health import Readiness, make_router
from gravity_fanout.lanes import Lanes
from gravity_fanout.requests import make_request_consumer
from gravity_fanout.retries import RetryConsumer
from gravity_fanout.schedule import RetryPolicy
from gravity_fanout.settings import Settings
from gravity_service import Supervisor
from gravity_service.metrics import FanoutMetrics, install_metrics
from gravity_webhooks import SecretBox

__all__ = ["USER_AGENT", "create_app"]

PLACEMENT_TIMEOUT = 60.0
"""Seconds startup waits for the group to give the inbound consumer its partitions."""


async def _until(event: asyncio.Event, task: asyncio.Task[object], timeout: float | None = None) -> None:
    """Wait for ``event``; raise if ``task`` ends first (startup fails rather than waiting forever)."""
    waiter = asyncio.ensure_future(event.wait())
    done, _ = await asyncio.wait({waiter, task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    if waiter in done:
        return
    waiter.cancel()
    if task in done:
        raise RuntimeError(f"task {task.get_name()!r} ended during startup")
    raise TimeoutError(f"task {task.get_name()!r} was not ready within {timeout} s")


async def _close_all(consumers: Iterable[InboundConsumer | RetryConsumer | EventConsumer]) -> None:
    """Leave every group (the loops have stopped); one failing to close does not keep the others open."""
    await asyncio.gather(*(c.close() for c in consumers), return_exceptions=True)


def create_app(settings: Settings) -> FastAPI:
    """Build the fanout app for ``settings``."""
    readiness = Readiness()
    supervisor = Supervisor()
    metrics = FanoutMetrics(tenant_labels=settings.metrics_tenant_labels)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await ensure_topics(settings, create=not settings.production)
            producer = make_producer(settings, client_id="gravity-fanout", linger_ms=settings.linger_ms)
            await producer.start()
            stack.push_async_callback(producer.stop)  # last: attempts record through it
            clients = make_client_pool(settings)
            stack.push_async_callback(clients.aclose)
            secret_key = settings.secret_key.get_secret_value() if settings.secret_key else ""
            apps = AppTable(SecretBox(secret_key))
            deliverer = Deliverer(
                clients=clients,
                producer=producer,
                apps=apps,
                policy=RetryPolicy(settings.retry_schedule, settings.retry_jitter),
                disable_after=timedelta(seconds=settings.disable_after_seconds),
                retry_partitions=len(await producer.partitions_for(topics.FANOUT_RETRY)),
                group=settings.consumer_group,
                guard_delay=settings.guard_delay_seconds,
                metrics=metrics,
            )
            lanes = Lanes(deliverer, settings)

            def removed(app_id: str) -> None:
                lanes.drop(app_id)
                clients.drop(app_id)

            apps.on_removed = removed
            reader = make_apps_reader(settings, apps)
            inbound = InboundConsumer(settings, apps, lanes, producer)
            retries = RetryConsumer(settings, apps, deliverer, producer)
            requests = make_request_consumer(settings, apps, deliverer, producer)
            consumers = (inbound, retries, requests)
            for lagging in (reader, *consumers):
                metrics.consumer_lag.track(lagging)
            # Cleanup, in reverse of this order: out of rotation, stop the loops, end the first attempts
            # the lanes hold (uncommitted: read again), leave the groups, close the reader.
            stack.push_async_callback(reader.close)
            stack.push_async_callback(_close_all, consumers)
            stack.callback(lanes.close)
            stack.push_async_callback(supervisor.stop)
            stack.callback(readiness.stopping)

            await reader.start()
            await _until(reader.ready, supervisor.start("apps-reader", reader.run(), stop=reader.stop))
            readiness.apps_loaded()  # deliver nothing before every app is known
            await asyncio.gather(*(c.start() for c in consumers))
            placed = supervisor.start("inbound", inbound.run(), stop=inbound.stop)
            supervisor.start("retries", retries.run(), stop=retries.stop)
            supervisor.start("requests", requests.run(), stop=requests.stop)
            await _until(inbound.assigned, placed, PLACEMENT_TIMEOUT)  # reading from fixed positions
            readiness.consumers_placed()
            app.state.apps, app.state.deliverer, app.state.requests = apps, deliverer, requests
            app.state.inbound, app.state.retries = inbound, retries
            yield

    app = FastAPI(title="Gravity fanout", version="0.1.0", lifespan=lifespan)
    app.state.metrics = metrics
    install_metrics(app, metrics)
    app.include_router(make_router(readiness, supervisor))
    return app
