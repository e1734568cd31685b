"""Recovery from PostgreSQL: a registry started on a broker that lost the change streams republishes the
subscriptions, API keys and apps of its database before it is ready (and on that broker ingest accepts
the tenant's webhooks again, realtime its API key, and fanout delivers to its app); a registry on an intact broker republishes nothing; ``gravity-registry
republish`` does it on demand (``--prune`` removes keys the database does not know); ``gravity-registry
topics`` provisions every topic."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from asgi_lifespan import LifespanManager
from tests.realtime.harness import realtime_settings, running_realtime
from tests.registry.conftest import ADMIN_TOKEN, Registry, registry_settings
from tests.support import (
    WebhookReceiver,
    eventually,
    notification,
    publish_events,
    running_receiver,
    wait_ready,
)
from websockets.asyncio.client import connect

from gravity_events import topics
from gravity_events.codec import decode
from gravity_events.kafka import ensure_topics
from gravity_events.models import ApiKeyActive, ApiKeyRevoked, AppUpserted, Event, SubscriptionActive
from gravity_events.settings import KafkaSettings
from gravity_events.topics import ALL_TOPICS
from gravity_fanout.app import create_app as create_fanout
from gravity_fanout.settings import Settings as FanoutSettings
from gravity_ingest.app import create_app as create_ingest
from gravity_ingest.settings import Settings as IngestSettings
from gravity_registry.app import create_app
from gravity_registry.settings import DEV_SECRET_KEY, Settings
from gravity_webhooks import SecretBox

PROPAGATION = 5.0  # the contract's promise, in seconds
CHANGE_TOPICS = (topics.SUBSCRIPTIONS, topics.API_KEYS, topics.APPS)


@contextlib.asynccontextmanager
async def fresh_broker(folder: Path) -> AsyncIterator[KafkaSettings]:
    """A new, empty embedded broker with every topic created."""
    from gravity_devstack.kafka import TansuBroker

    broker = TansuBroker(log=folder / "tansu.log")
    try:
        await broker.wait_ready()
        settings = KafkaSettings(
            KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers,
            KAFKA_ENABLE_IDEMPOTENCE=False,
            KAFKA_FETCH_MAX_WAIT_MS=10,
            KAFKA_SESSION_TIMEOUT_MS=3_000,
        )
        await ensure_topics(settings)
        yield settings
    finally:
        broker.stop()


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Registry]:
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=90) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://registry") as client:
            await wait_ready(client=client, timeout=30)
            yield Registry(client, settings, app)


async def change_records(kafka: KafkaSettings) -> dict[str, dict[str, list[Event]]]:
    """Every record of the change streams: topic → key → events in order, read until two polls in a row
    bring nothing."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    found: dict[str, dict[str, list[Event]]] = {t: defaultdict(list) for t in CHANGE_TOPICS}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.kafka_bootstrap_servers, enable_auto_commit=False, fetch_max_wait_ms=10
    )
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in CHANGE_TOPICS for p in consumer.partitions_for_topic(t) or ()]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        idle = 0
        while idle < 2:
            batch = await consumer.getmany(timeout_ms=300)
            idle = 0 if any(batch.values()) else idle + 1
            for tp, records in batch.items():
                for r in records:
                    found[tp.topic][r.key.decode()].append(decode(tp.topic, r.value, r.headers))
    finally:
        await consumer.stop()
    return found


async def _populate(registry: Registry, webhook_url: str = "http://127.0.0.1:9/hook") -> dict[str, Any]:
    c = registry.client
    tenant = await registry.tenant("Recovered")
    app = (
        await c.post("/v1/apps", json={"name": "crm", "webhookUrl": webhook_url}, headers=tenant["auth"])
    ).json()
    await c.post("/v1/apps", json={"name": "gone"}, headers=tenant["auth"])
    gone = (await c.get("/v1/apps", headers=tenant["auth"])).json()["apps"][-1]["appId"]
    assert (await c.delete(f"/v1/apps/{gone}", headers=tenant["auth"])).status_code == 204
    extra = (await c.post("/v1/api-keys", json={"name": "ci"}, headers=tenant["auth"])).json()
    sub = (
        await c.post("/v1/dev/subscriptions", json={"tenantId": tenant["tenantId"]}, headers=registry.admin)
    ).json()
    keys = {k["keyId"] for k in (await c.get("/v1/api-keys", headers=tenant["auth"])).json()["apiKeys"]}

    async def outbox_empty() -> bool:
        async with registry.app.state.pool.acquire() as conn:
            return int(await conn.fetchval("SELECT count(*) FROM outbox")) == 0

    await eventually(outbox_empty, timeout=10)
    return {"tenant": tenant, "app": app, "gone": gone, "keys": keys, "extra": extra, "sub": sub}


def _registry_env(kafka: KafkaSettings, database_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.kafka_bootstrap_servers,
        "KAFKA_ENABLE_IDEMPOTENCE": "false",
        "GRAVITY_ADMIN_TOKEN": ADMIN_TOKEN,
        "GRAVITY_ENV": "development",
    }


async def _command(env: dict[str, str], *args: str, timeout: float = 120) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gravity_registry",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_a_registry_on_a_broker_that_lost_the_streams_republishes_them(
    kafka_settings: KafkaSettings,
    make_database: Callable[[], Awaitable[str]],
    tmp_path: Path,
) -> None:
    database_url = await make_database()
    async with running_receiver() as receiver:
        async with running(registry_settings(kafka_settings, database_url)) as first:
            made = await _populate(first, receiver.url())
        await _recovers_on_an_empty_broker(made, receiver, database_url, tmp_path)


async def _recovers_on_an_empty_broker(
    made: dict[str, Any], receiver: WebhookReceiver, database_url: str, tmp_path: Path
) -> None:
    tenant, app, sub = made["tenant"], made["app"], made["sub"]
    async with fresh_broker(tmp_path) as lost:
        empty = await change_records(lost)
        assert not any(empty[t] for t in CHANGE_TOPICS)
        async with running(registry_settings(lost, database_url)):
            ready_at = time.monotonic()

            async def everything_there() -> dict[str, dict[str, list[Event]]]:
                found = await change_records(lost)
                wanted = (
                    sub["subscriptionId"] in found[topics.SUBSCRIPTIONS]
                    and made["keys"] <= set(found[topics.API_KEYS])
                    and app["appId"] in found[topics.APPS]
                )
                return found if wanted else {}

            found = await eventually(everything_there, timeout=PROPAGATION)
            assert time.monotonic() - ready_at <= PROPAGATION
            (subscription,) = found[topics.SUBSCRIPTIONS][sub["subscriptionId"]]
            assert isinstance(subscription, SubscriptionActive)
            assert subscription.tenant_id == tenant["tenantId"]
            for key_id in made["keys"]:
                (key,) = found[topics.API_KEYS][key_id]
                assert isinstance(key, ApiKeyActive) and key.tenant_id == tenant["tenantId"]
            (upserted,) = found[topics.APPS][app["appId"]]
            assert isinstance(upserted, AppUpserted)
            assert (upserted.webhook_url, upserted.disabled) == (receiver.url(), False)
            box = SecretBox(DEV_SECRET_KEY)
            assert [box.decrypt(s.ciphertext) for s in upserted.signing_secrets] == [app["signingSecret"]]
            assert made["gone"] not in found[topics.APPS]  # a deleted app is not brought back

            # on the new broker ingest accepts the tenant's webhooks again, realtime its key (learnt from
            # the stream: the registry address it would ask is a closed port), and fanout delivers the
            # message to its app
            ingest = create_ingest(
                IngestSettings(
                    KAFKA_BOOTSTRAP_SERVERS=lost.kafka_bootstrap_servers, KAFKA_ENABLE_IDEMPOTENCE=False
                )
            )
            fanout = create_fanout(
                FanoutSettings(
                    KAFKA_BOOTSTRAP_SERVERS=lost.kafka_bootstrap_servers,
                    KAFKA_ENABLE_IDEMPOTENCE=False,
                    KAFKA_SESSION_TIMEOUT_MS=lost.kafka_session_timeout_ms,
                )
            )
            async with (
                LifespanManager(ingest, startup_timeout=60) as manager,
                LifespanManager(fanout, startup_timeout=60, shutdown_timeout=30),
                running_realtime(realtime_settings(lost, "http://127.0.0.1:9")) as (_, realtime_port),
                httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://i") as c,
                connect(f"ws://127.0.0.1:{realtime_port}/v1/ws", additional_headers=tenant["auth"]) as socket,
            ):
                connected = orjson.loads(await asyncio.wait_for(socket.recv(), PROPAGATION))
                assert connected["tenantId"] == tenant["tenantId"], connected
                await wait_ready(client=c, timeout=30)
                rc_id = "recovered-1"
                r = await c.post(
                    "/v1/webhooks/ringcentral",
                    content=orjson.dumps(notification(sub["subscriptionId"], rc_id)),
                    headers={"Verification-Token": sub["verificationToken"]},
                )
                assert r.status_code == 200, r.text
                frame = orjson.loads(await asyncio.wait_for(socket.recv(), 30))
                assert frame["rcMessageId"] == rc_id, frame
                delivered = await eventually(lambda: receiver.received("/hook"), timeout=30)
                assert orjson.loads(delivered[0].body)["rcMessageId"] == rc_id

        # a registry restarted on the intact broker republishes nothing: one record per key still
        async with running(registry_settings(lost, database_url)):
            again = await change_records(lost)
        assert len(again[topics.SUBSCRIPTIONS][sub["subscriptionId"]]) == 1
        assert len(again[topics.APPS][app["appId"]]) == 1
        assert all(len(again[topics.API_KEYS][k]) == 1 for k in made["keys"])


async def test_the_republish_command_and_prune(
    kafka_settings: KafkaSettings,
    make_database: Callable[[], Awaitable[str]],
    tmp_path: Path,
) -> None:
    database_url = await make_database()
    async with running(registry_settings(kafka_settings, database_url)) as first:
        made = await _populate(first)
    async with fresh_broker(tmp_path) as broker:
        env = _registry_env(broker, database_url)
        stale = ApiKeyActive(
            key_id="key_00000000000000ff", tenant_id="tenant_00000000000000ff", key_sha256="0" * 64
        )
        await publish_events(broker, topics.API_KEYS, (stale.key_id, stale))

        code, out = await _command(env, "republish")
        assert code == 0, out
        assert f"{topics.API_KEYS}: 2 in the database, 1 live on the topic, 2 missing, 1 unknown" in out, out
        code, out = await _command(env, "republish")  # twice is harmless: the latest per key is the same
        assert code == 0, out
        found = await change_records(broker)
        assert [type(e) for e in found[topics.APPS][made["app"]["appId"]]] == [AppUpserted, AppUpserted]
        assert found[topics.APPS][made["app"]["appId"]][0] == found[topics.APPS][made["app"]["appId"]][1]
        assert [type(e) for e in found[topics.API_KEYS][stale.key_id]] == [ApiKeyActive]  # not pruned

        code, out = await _command(env, "republish", "--prune")
        assert code == 0, out
        found = await change_records(broker)
        assert isinstance(found[topics.API_KEYS][stale.key_id][-1], ApiKeyRevoked)
        for key_id in made["keys"]:
            assert isinstance(found[topics.API_KEYS][key_id][-1], ApiKeyActive)
        assert isinstance(found[topics.SUBSCRIPTIONS][made["sub"]["subscriptionId"]][-1], SubscriptionActive)


async def test_the_topics_command_provisions_every_topic(tmp_path: Path) -> None:
    from gravity_devstack.kafka import TansuBroker

    broker = TansuBroker(log=tmp_path / "tansu.log")
    try:
        await broker.wait_ready()
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "GRAVITY_ENV": "development",
        }
        env.pop("DATABASE_URL", None)  # the command needs no database
        for _ in range(2):  # idempotent
            code, out = await _command(env, "topics")
            assert code == 0, out
            for spec in ALL_TOPICS:
                assert f"{spec.name}: {spec.partitions} partitions" in out, out
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        await admin.start()
        try:
            assert {s.name for s in ALL_TOPICS} <= set(await admin.list_topics())
        finally:
            await admin.close()
        code, out = await _command(env, "topics", "--replication-factor", "1", "--min-insync-replicas", "2")
        assert code == 2 and "min.insync.replicas" in out, out
    finally:
        broker.stop()


@pytest.mark.parametrize(
    ("env", "factor", "in_sync"),
    [
        ({"GRAVITY_ENV": "production"}, 3, 2),
        ({"GRAVITY_ENV": "development"}, 1, 1),
        ({"GRAVITY_ENV": "production", "KAFKA_REPLICATION_FACTOR": "5"}, 5, 2),
        ({"GRAVITY_ENV": "production", "KAFKA_REPLICATION_FACTOR": "1"}, 1, 1),
        (
            {"GRAVITY_ENV": "development", "KAFKA_MIN_INSYNC_REPLICAS": "1", "KAFKA_REPLICATION_FACTOR": "3"},
            3,
            1,
        ),
    ],
)
def test_topic_defaults_fit_production(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], factor: int, in_sync: int
) -> None:
    from gravity_registry.provision import TopicSettings, topic_plan

    for name in ("GRAVITY_ENV", "KAFKA_REPLICATION_FACTOR", "KAFKA_MIN_INSYNC_REPLICAS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    got_factor, got_in_sync, specs = topic_plan(TopicSettings())
    assert (got_factor, got_in_sync) == (factor, in_sync)
    assert all(s.configs["min.insync.replicas"] == str(in_sync) for s in specs)
    assert {s.name: s.configs.get("cleanup.policy") for s in specs}[topics.APPS] == "compact"
