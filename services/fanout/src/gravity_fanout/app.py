"""The fanout process: the lifespan owns the producer, the delivery client, the apps table and the
three consumers; HTTP serves health and readiness only (contract: port 8003)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import orjson
from fastapi import FastAPI
from fastapi.responses import Response

from gravity_events import topics
from gravity_events.kafka import ChangeStreamReader, ensure_topics, make_producer
from gravity_fanout.consumer import InboundConsumer, Lanes, RetryConsumer, make_request_consumer
from gravity_fanout.handlers import AppTable, ClientPool, Deliverer, RetryPolicy
from gravity_fanout.settings import Settings
from gravity_webhooks import DeliveryClient, SecretBox

__all__ = ["USER_AGENT", "create_app"]

USER_AGENT = "Gravity-SMS-Webhooks/0.1.0"


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def create_app(settings: Settings) -> FastAPI:
    """Build the fanout app for ``settings``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await ensure_topics(settings)
        producer = make_producer(settings, client_id="gravity-fanout")
        await producer.start()
        clients = ClientPool(
            lambda: DeliveryClient(
                production=settings.production,
                user_agent=USER_AGENT,
                timeout=settings.timeout_seconds,
                max_connections=settings.max_connections_per_app,
                max_keepalive_per_pool=settings.max_connections_per_app,
            )
        )
        secret_key = settings.secret_key.get_secret_value() if settings.secret_key else ""
        apps = AppTable(SecretBox(secret_key))
        partitions = len(await producer.partitions_for(topics.FANOUT_RETRY))
        deliverer = Deliverer(
            clients=clients,
            producer=producer,
            apps=apps,
            policy=RetryPolicy(settings.retry_schedule, settings.retry_jitter),
            disable_after=timedelta(seconds=settings.disable_after_seconds),
            retry_partitions=partitions,
            group=settings.consumer_group,
        )
        lanes = Lanes(deliverer, settings)

        def removed(app_id: str) -> None:
            lanes.drop(app_id)
            clients.drop(app_id)

        apps.on_removed = removed
        reader = ChangeStreamReader(
            settings, topics=[topics.APPS], apply=apps.apply, client_id="gravity-fanout"
        )
        inbound = InboundConsumer(settings, apps, lanes, producer)
        retries = RetryConsumer(settings, apps, deliverer, producer)
        requests = make_request_consumer(settings, apps, deliverer, producer)
        await reader.start()
        reader_task = asyncio.create_task(reader.run(), name="apps-reader")
        await reader.ready.wait()  # deliver nothing before every app is known
        await asyncio.gather(inbound.start(), retries.start(), requests.start())
        tasks = [
            asyncio.create_task(inbound.run(), name="inbound"),
            asyncio.create_task(retries.run(), name="retries"),
            asyncio.create_task(requests.run(), name="requests"),
        ]
        await asyncio.wait_for(inbound.assigned.wait(), 60)  # ready = reading from a fixed position
        app.state.apps, app.state.deliverer, app.state.ready = apps, deliverer, True
        try:
            yield
        finally:
            app.state.ready = False
            inbound.stop()
            retries.stop()
            requests.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
            lanes.close()
            await asyncio.gather(inbound.close(), retries.close(), requests.close(), return_exceptions=True)
            reader.stop()
            await reader_task
            await reader.close()
            await clients.aclose()
            await producer.stop()

    app = FastAPI(title="Gravity fanout", version="0.1.0", lifespan=lifespan)
    app.state.ready = False

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return _json({"status": "ok"})

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        if app.state.ready:
            return _json({"status": "ok"})
        return _json({"status": "unavailable", "checks": {"apps": "loading", "consumers": "starting"}}, 503)

    return app
