"""Fanout against a real broker and real HTTP receivers.

Apps are published on the apps change stream exactly as the registry does (secrets encrypted), messages
on ``sms_inbound``; what the receivers get and what fanout records on the deliveries topic is checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from asgi_lifespan import LifespanManager
from tests.fixtures import TopicTail, publish_events
from tests.simulators.receiver import WebhookReceiver, running_receiver
from tests.support import eventually, free_port, wait_ready

from gravity_events import ids, topics
from gravity_events.codec import decode, encode, encode_headers
from gravity_events.kafka import ensure_topics, make_producer
from gravity_events.models import (
    AppEndpointDisabled,
    AppUpserted,
    DeliveryAttempt,
    DeliveryRequested,
    DeliveryRetry,
    EncryptedSecret,
    SmsInbound,
)
from gravity_events.settings import KafkaSettings
from gravity_fanout.app import create_app
from gravity_fanout.handlers import RETRY_GROUP_HEADER, RetryPolicy
from gravity_fanout.settings import DEFAULT_RETRY_SCHEDULE, Settings
from gravity_webhooks import DEVELOPMENT_SECRET_KEY, DeliveryResult, SecretBox, new_signing_secret, verify

BOX = SecretBox(DEVELOPMENT_SECRET_KEY)


def fanout_settings(kafka: KafkaSettings, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.kafka_bootstrap_servers,
        "KAFKA_ENABLE_IDEMPOTENCE": kafka.kafka_enable_idempotence,
        "KAFKA_SESSION_TIMEOUT_MS": kafka.kafka_session_timeout_ms,
        "GRAVITY_FANOUT_CONSUMER_GROUP": "fanout-test-" + secrets.token_hex(4),
        "GRAVITY_FANOUT_RETRY_SCHEDULE": "[0.3, 0.3, 0.3, 0.3]",
    }
    values.update(overrides)
    return Settings(**values)


RUNNING: list[Any] = []
"""The in-process fanout apps now running (World.app waits until each knows a new app)."""


@contextlib.asynccontextmanager
async def running_fanout(settings: Settings) -> AsyncIterator[Any]:
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=30):
        RUNNING.append(app)
        try:
            yield app
        finally:
            RUNNING.remove(app)


def app_event(
    tenant_id: str, app_id: str, url: str | None, *secrets_: tuple[str, Any], disabled: bool = False
) -> AppUpserted:
    return AppUpserted(
        app_id=app_id,
        tenant_id=tenant_id,
        webhook_url=url,
        disabled=disabled,
        signing_secrets=tuple(EncryptedSecret(ciphertext=BOX.encrypt(s), expires_at=e) for s, e in secrets_),
        updated_at=ids.utcnow(),
    )


def sms(tenant_id: str, text: str = "hello") -> SmsInbound:
    rc_id = str(random.randrange(10**12, 10**13))
    return SmsInbound(
        message_id=ids.message_id_for(tenant_id, rc_id),
        from_="+15559876543",
        to="+15551234567",
        body=text,
        rc_message_id=rc_id,
        tenant_id=tenant_id,
        timestamp=ids.utcnow(),
    )


@dataclass
class World:
    kafka: KafkaSettings
    tenant_id: str
    since: int = field(default_factory=lambda: int(time.time() * 1000) - 1000)
    """When the test began (epoch ms): topic readers start here, not at offset 0."""

    async def app(
        self, url: str | None, *secrets_: tuple[str, Any], disabled: bool = False
    ) -> tuple[str, str]:
        """Publish an app and wait until every running fanout knows it; return (appId, its secret).

        Without the wait a message sent at once could be read before the app (the two topics are read
        independently), and the test would measure that race instead of the behaviour it names.
        """
        app_id = ids.new_app_id()
        secret = new_signing_secret()
        pairs = secrets_ or ((secret, None),)
        await publish_events(
            self.kafka,
            topics.APPS,
            (app_id, app_event(self.tenant_id, app_id, url, *pairs, disabled=disabled)),
        )
        await eventually(lambda: all(f.state.apps.get(app_id) for f in RUNNING), timeout=10)
        return app_id, pairs[0][0]

    async def send(self, n: int = 1, text: str = "hello") -> list[SmsInbound]:
        events = [sms(self.tenant_id, f"{text} {i}") for i in range(n)]
        await publish_events(self.kafka, topics.SMS_INBOUND, *((self.tenant_id, e) for e in events))
        return events


@pytest.fixture
def world(kafka_settings: KafkaSettings) -> World:
    return World(kafka_settings, ids.new_tenant_id())


async def deliveries(world: World, app_id: str, count: int, timeout: float = 15) -> list[Any]:
    """The first ``count`` records of ``app_id`` on the deliveries topic."""
    async with TopicTail(world.kafka, topics.DELIVERIES, since=world.since) as tail:

        async def enough() -> list[Any]:
            mine = [
                decode(topics.DELIVERIES, r.value, r.headers)
                for r in await tail.poll()
                if r.key == app_id.encode()
            ]
            return mine if len(mine) >= count else []

        return await eventually(enough, timeout=timeout)


def bodies(receiver: WebhookReceiver, path: str) -> list[bytes]:
    return [r.body for r in receiver.received(path)]


async def test_exact_payload_headers_and_signature(kafka_settings: KafkaSettings, world: World) -> None:
    async with running_receiver() as receiver, running_fanout(fanout_settings(kafka_settings)):
        app_id, secret = await world.app(receiver.url("/hook"))
        [event] = await world.send()
        [request] = await eventually(lambda: receiver.received("/hook"), timeout=10)
    assert request.body == encode(event)  # byte-identical to the sms_inbound record
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"] == event.message_id
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
    assert request.headers["user-agent"].startswith("Gravity-SMS-Webhooks/")
    verify(secret, request.headers, request.body)
    [attempt] = await deliveries(world, app_id, 1)
    assert isinstance(attempt, DeliveryAttempt) and attempt.succeeded and attempt.attempt == 1
    assert (
        attempt.message_id == event.message_id
        and attempt.response_code == 200
        and attempt.next_attempt_at is None
    )


async def test_rotation_signs_with_both_live_secrets(kafka_settings: KafkaSettings, world: World) -> None:
    new, old, gone = new_signing_secret(), new_signing_secret(), new_signing_secret()
    later, earlier = ids.utcnow() + timedelta(hours=24), ids.utcnow() - timedelta(seconds=1)
    async with running_receiver() as receiver, running_fanout(fanout_settings(kafka_settings)):
        await world.app(receiver.url("/rotating"), (new, None), (old, later))
        await world.app(receiver.url("/expired"), (new, None), (gone, earlier))
        await world.send()
        [rotating] = await eventually(lambda: receiver.received("/rotating"), timeout=10)
        [expired] = await eventually(lambda: receiver.received("/expired"), timeout=10)
    assert len(rotating.headers["webhook-signature"].split()) == 2
    verify(new, rotating.headers, rotating.body)
    verify(old, rotating.headers, rotating.body)
    assert len(expired.headers["webhook-signature"].split()) == 1  # the rotation window is over
    verify(new, expired.headers, expired.body)


async def test_slow_and_dead_apps_do_not_delay_a_fast_one(
    kafka_settings: KafkaSettings, world: World
) -> None:
    async with (
        running_receiver() as receiver,
        running_fanout(fanout_settings(kafka_settings, GRAVITY_FANOUT_RETRY_SCHEDULE="[60]")),
    ):
        receiver.behave("/slow", delay=4.9)
        receiver.behave("/hang", hang=True)
        receiver.behave("/fail", status=500)
        ids_ = {
            path: (await world.app(receiver.url(path)))[0] for path in ("/slow", "/hang", "/fail", "/fast")
        }
        refused_id, _ = await world.app(f"http://127.0.0.1:{free_port()}/refused")
        events = await world.send(30)
        await eventually(lambda: len(receiver.received("/fast")) >= 30, timeout=10)
        fast_done = receiver.received("/fast")[-1].at
        first_slow = receiver.received("/slow")[0].at
        # every fast delivery arrived before the slow endpoint had answered even its first request
        assert fast_done < first_slow + 4.9
        assert sorted(bodies(receiver, "/fast")) == sorted(encode(e) for e in events)
        assert len(receiver.received("/fail")) >= 30 and receiver.received("/hang")
        [hung, *_] = await deliveries(world, ids_["/hang"], 1)
        assert hung.error == "timed out after 5 s" and hung.duration_ms >= 4900 and hung.response_code is None
        [refused, *_] = await deliveries(world, refused_id, 1)
        assert refused.error.startswith("connection failed") and refused.response_code is None


def test_retry_schedule_and_its_rules() -> None:
    policy = RetryPolicy(DEFAULT_RETRY_SCHEDULE, jitter=0.1, rng=random.Random(7))
    failed = DeliveryResult(ok=False, status=500, body="", error="HTTP 500", duration_ms=1)
    delays = [policy.delay(n, failed) for n in range(1, 10)]
    expected = [5, 30, 120, 600, 1800, 7200, 21600, 43200]
    for delay, base in zip(delays[:8], expected, strict=True):
        assert delay is not None and base * 0.9 <= delay <= base * 1.1
    assert delays[8] is None  # nine attempts over about 21 hours, then it stops
    assert sum(expected) / 3600 < 24
    refused = DeliveryResult(ok=False, status=None, body="", error="connection failed", duration_ms=1)
    assert policy.delay(1, refused) is not None
    for status in (400, 401, 404, 410, 422):
        assert (
            policy.delay(1, DeliveryResult(ok=False, status=status, body="", error="", duration_ms=1)) is None
        )
    for status in (408, 429, 503):
        assert (
            policy.delay(1, DeliveryResult(ok=False, status=status, body="", error="", duration_ms=1))
            is not None
        )
    throttled = DeliveryResult(ok=False, status=429, body="", error="", duration_ms=1, retry_after=90)
    assert policy.delay(1, throttled) == 90  # Retry-After wins over a shorter step


async def test_failures_are_retried_on_schedule_until_success(
    kafka_settings: KafkaSettings, world: World
) -> None:
    async with running_receiver() as receiver, running_fanout(fanout_settings(kafka_settings)):
        receiver.behave("/flaky", status=500, body=b"down")
        app_id, _ = await world.app(receiver.url("/flaky"))
        [event] = await world.send()
        await eventually(lambda: len(receiver.received("/flaky")) >= 2, timeout=10)
        receiver.behave("/flaky", status=200)
        attempts = await deliveries(world, app_id, 3)
    assert [(a.attempt, a.succeeded) for a in attempts] == [(1, False), (2, False), (3, True)]
    assert all(a.message_id == event.message_id for a in attempts)
    assert attempts[0].response_code == 500 and attempts[0].error == "HTTP 500"
    assert attempts[0].next_attempt_at is not None and attempts[0].next_attempt_at > attempts[0].attempted_at
    gap = (attempts[1].attempted_at - attempts[0].attempted_at).total_seconds()
    assert gap >= 0.3 * 0.9  # not before the schedule said
    assert len({r.body for r in receiver.received("/flaky")}) == 1  # the same bytes every time


def due_retry(world: World, app_id: str, event: SmsInbound) -> DeliveryRetry:
    now = ids.utcnow()
    return DeliveryRetry(
        app_id=app_id, tenant_id=world.tenant_id, attempt=2, due_at=now, first_attempted_at=now, event=event
    )


async def publish_retries(kafka: KafkaSettings, *retries: tuple[DeliveryRetry, str]) -> None:
    """Append (retry, scheduling group) records to partition 0 of the retry queue, in this order."""
    producer = make_producer(kafka, client_id="tests")
    await producer.start()
    try:
        for retry, group in retries:
            await producer.send_and_wait(
                topics.FANOUT_RETRY,
                encode(retry),
                key=retry.app_id.encode(),
                headers=[*encode_headers(retry), (RETRY_GROUP_HEADER, group.encode())],
                partition=0,
            )
    finally:
        await producer.stop()


async def test_retries_of_another_deployment_are_left_alone(
    kafka_settings: KafkaSettings, world: World
) -> None:
    settings = fanout_settings(kafka_settings)
    async with running_receiver() as receiver, running_fanout(settings):
        foreign_id, _ = await world.app(receiver.url("/foreign"))
        own_id, _ = await world.app(receiver.url("/own"))
        event = sms(world.tenant_id)
        await publish_retries(  # one partition, in this order: reaching /own means /foreign was read
            kafka_settings,
            (due_retry(world, foreign_id, event), "another-deployment"),
            (due_retry(world, own_id, event), settings.consumer_group),
        )
        [own] = await eventually(lambda: receiver.received("/own"), timeout=15)
    assert own.body == encode(event)
    assert receiver.received("/foreign") == []


async def test_a_hanging_endpoints_retries_do_not_delay_another_apps(
    kafka_settings: KafkaSettings, world: World
) -> None:
    settings = fanout_settings(
        kafka_settings, GRAVITY_FANOUT_RETRY_CONCURRENCY=10, GRAVITY_FANOUT_PER_APP_CONCURRENCY=2
    )
    group = settings.consumer_group
    async with running_receiver() as receiver, running_fanout(settings):
        receiver.behave("/hang", hang=True)
        hang_id, _ = await world.app(receiver.url("/hang"))
        ok_id, _ = await world.app(receiver.url("/ok"))
        hung = [(due_retry(world, hang_id, sms(world.tenant_id)), group) for _ in range(30)]
        await publish_retries(kafka_settings, *hung, (due_retry(world, ok_id, sms(world.tenant_id)), group))
        await eventually(lambda: receiver.received("/ok") and receiver.received("/hang"), timeout=15)
        [ok], hang_attempts = receiver.received("/ok"), receiver.received("/hang")
    # the healthy app's retry, queued behind 30 retries to a hanging endpoint, went out before the first of
    # those attempts had even timed out (5 s): it did not wait for them
    assert ok.at < hang_attempts[0].at + 4.9
    assert len(hang_attempts) <= 2  # that endpoint gets its own concurrency, no more


async def test_shutdown_is_prompt_when_every_slot_waits_on_a_hanging_endpoint(
    kafka_settings: KafkaSettings, world: World
) -> None:
    """Both consumers' windows full of work for an endpoint that never answers (60 s timeout here): stopping
    must not wait for a slot to free. In CI the flood test's shutdown once hung here and starved the rest."""
    settings = fanout_settings(
        kafka_settings,
        GRAVITY_FANOUT_MAX_IN_FLIGHT=3,
        GRAVITY_FANOUT_PER_APP_CONCURRENCY=1,
        GRAVITY_FANOUT_TIMEOUT_SECONDS=60,
    )
    async with running_receiver() as receiver:
        receiver.behave("/hang", hang=True)
        app = create_app(settings)
        manager = LifespanManager(app, startup_timeout=60, shutdown_timeout=15)
        await manager.__aenter__()
        RUNNING.append(app)
        try:
            hang_id, _ = await world.app(receiver.url("/hang"))
            await world.send(10)
            await publish_retries(
                kafka_settings,
                *(
                    (due_retry(world, hang_id, sms(world.tenant_id)), settings.consumer_group)
                    for _ in range(10)
                ),
            )
            await eventually(lambda: receiver.received("/hang"), timeout=15)
        finally:
            RUNNING.remove(app)
        await manager.__aexit__(None, None, None)  # raises TimeoutError if the shutdown hangs


async def test_client_errors_end_retries(kafka_settings: KafkaSettings, world: World) -> None:
    async with running_receiver() as receiver, running_fanout(fanout_settings(kafka_settings)):
        receiver.behave("/gone", status=410)
        app_id, _ = await world.app(receiver.url("/gone"))
        await world.send()
        [attempt] = await deliveries(world, app_id, 1)
    assert attempt.response_code == 410 and attempt.next_attempt_at is None


async def test_retries_survive_a_restart(kafka_settings: KafkaSettings, world: World) -> None:
    settings = fanout_settings(kafka_settings, GRAVITY_FANOUT_RETRY_SCHEDULE="[2.0]")
    async with running_receiver() as receiver:
        receiver.behave("/later", status=503)
        async with running_fanout(settings):
            app_id, _ = await world.app(receiver.url("/later"))
            await world.send()
            [first] = await deliveries(world, app_id, 1)
            assert first.next_attempt_at is not None
        receiver.behave("/later", status=200)  # fanout is down when the retry falls due
        async with running_fanout(settings.model_copy()):
            attempts = await deliveries(world, app_id, 2)
    assert [(a.attempt, a.succeeded) for a in attempts] == [(1, False), (2, True)]
    assert attempts[1].attempted_at >= first.next_attempt_at


async def test_removing_the_url_stops_deliveries(kafka_settings: KafkaSettings, world: World) -> None:
    async with running_receiver() as receiver, running_fanout(fanout_settings(kafka_settings)) as app:
        app_id, secret = await world.app(receiver.url("/a"))
        await world.app(receiver.url("/b"))
        await world.send()
        await eventually(lambda: receiver.received("/a") and receiver.received("/b"), timeout=10)
        event = app_event(world.tenant_id, app_id, None, (secret, None))
        await publish_events(kafka_settings, topics.APPS, (app_id, event))
        await eventually(lambda: app.state.apps.get(app_id).webhook_url is None, timeout=5)
        await world.send(3)
        await eventually(lambda: len(receiver.received("/b")) >= 4, timeout=10)
    assert len(receiver.received("/a")) == 1


async def test_disabled_apps_get_nothing(kafka_settings: KafkaSettings, world: World) -> None:
    async with running_receiver() as receiver, running_fanout(fanout_settings(kafka_settings)):
        await world.app(receiver.url("/off"), disabled=True)
        await world.app(receiver.url("/on"))
        await world.send(2)
        await eventually(lambda: len(receiver.received("/on")) >= 2, timeout=10)
    assert receiver.received("/off") == []


async def test_manual_retry_request(kafka_settings: KafkaSettings, world: World) -> None:
    async with running_receiver() as receiver, running_fanout(fanout_settings(kafka_settings)):
        app_id, secret = await world.app(receiver.url("/manual"))
        event = sms(world.tenant_id, "again")
        request = DeliveryRequested(
            app_id=app_id, tenant_id=world.tenant_id, event=event, requested_at=ids.utcnow()
        )
        await publish_events(kafka_settings, topics.DELIVERY_REQUESTS, (app_id, request))
        [got] = await eventually(lambda: receiver.received("/manual"), timeout=10)
    assert got.body == encode(event)
    verify(secret, got.headers, got.body)
    [attempt] = await deliveries(world, app_id, 1)
    assert attempt.message_id == event.message_id and attempt.succeeded


async def test_continuous_failure_disables_the_app(kafka_settings: KafkaSettings, world: World) -> None:
    settings = fanout_settings(
        kafka_settings,
        GRAVITY_FANOUT_DISABLE_AFTER_SECONDS=1.0,
        GRAVITY_FANOUT_RETRY_SCHEDULE="[0.4, 0.4, 0.4, 0.4, 0.4, 0.4]",
    )
    async with running_receiver() as receiver, running_fanout(settings):
        receiver.behave("/dead", status=500)
        app_id, _ = await world.app(receiver.url("/dead"))
        await world.send()

        async with TopicTail(kafka_settings, topics.DELIVERIES, since=world.since) as tail:

            async def disabled() -> list[Any]:
                mine = [
                    decode(topics.DELIVERIES, r.value, r.headers)
                    for r in await tail.poll()
                    if r.key == app_id.encode()
                ]
                return [e for e in mine if isinstance(e, AppEndpointDisabled)]

            [decision] = await eventually(disabled, timeout=30)
        assert (decision.disabled_at - decision.failing_since).total_seconds() >= 1.0
        seen = len(receiver.received("/dead"))
        await world.send(2)
        await world.app(receiver.url("/other"))  # a marker app: fanout has read past the new messages
        await world.send()
        await eventually(lambda: receiver.received("/other"), timeout=10)
    assert len(receiver.received("/dead")) == seen  # nothing more was spent on it


async def visit_group(kafka: KafkaSettings, group_id: str, topic: str) -> None:
    """Join ``group_id`` until the group gives this member partitions, then leave: two rebalances, after
    which everything is back with the members that were there before."""
    visitor = AIOKafkaConsumer(
        bootstrap_servers=kafka.kafka_bootstrap_servers,
        group_id=group_id,
        enable_auto_commit=False,
        session_timeout_ms=kafka.kafka_session_timeout_ms,
        heartbeat_interval_ms=500,
    )
    visitor.subscribe([topic])
    await visitor.start()
    try:

        async def has_partitions() -> bool:
            await visitor.getmany(timeout_ms=200)
            return bool(visitor.assignment())

        await eventually(has_partitions, timeout=30)
    finally:
        await visitor.stop()


async def test_a_rebalance_that_gives_the_partitions_back_sends_nothing_twice(
    kafka_settings: KafkaSettings, world: World
) -> None:
    """Another member joins the group and leaves while a slow app holds the commit point back: the
    partitions come back to the same copy, which resumes where it stopped reading instead of re-sending
    everything after the committed offset to every app (seen as 3 to 6 copies per message in the broker
    restart chaos run before this)."""
    settings = fanout_settings(kafka_settings)
    async with running_receiver() as receiver, running_fanout(settings):
        receiver.behave("/slow", delay=3.0)
        await world.app(receiver.url("/slow"))
        await world.app(receiver.url("/fast"))
        first = await world.send(24, "before")
        await eventually(lambda: len(receiver.received("/fast")) >= 24, timeout=10)
        assert len(receiver.received("/slow")) < 24  # 8 at a time, 3 s each: the commit point is held back

        await visit_group(kafka_settings, settings.consumer_group, topics.SMS_INBOUND)
        later = await world.send(6, "after")
        await eventually(lambda: len(receiver.received("/slow")) >= 30, timeout=60)
        await eventually(lambda: len(receiver.received("/fast")) >= 30, timeout=10)
        fast = bodies(receiver, "/fast")
        assert sorted(fast) == sorted(encode(e) for e in first + later)  # each exactly once


async def test_a_rebalance_of_the_retry_group_runs_no_retry_twice(
    kafka_settings: KafkaSettings, world: World
) -> None:
    """The same for retries: both apps fail every first attempt, then recover, one of them slowly, so its
    retries hold the retry partition's commit point back while a member visits the retry group. The quick
    app gets each retry once (before, the copy dropped its bookkeeping on revoke and re-ran from the
    committed offset)."""
    settings = fanout_settings(kafka_settings, GRAVITY_FANOUT_RETRY_SCHEDULE="[1.0]")
    async with running_receiver() as receiver, running_fanout(settings):
        receiver.behave("/slow", status=500)
        receiver.behave("/quick", status=500)
        await world.app(receiver.url("/slow"))
        await world.app(receiver.url("/quick"))
        events = await world.send(24, "retried")
        await eventually(
            lambda: len(receiver.received("/slow")) >= 24 and len(receiver.received("/quick")) >= 24,
            timeout=10,
        )
        failed = {p: len(receiver.received(p)) for p in ("/slow", "/quick")}
        receiver.behave("/slow", delay=3.0)  # the retries, due 1 s after each failure, now succeed
        receiver.behave("/quick")
        await eventually(lambda: len(receiver.received("/quick")) - failed["/quick"] >= 24, timeout=10)

        await visit_group(kafka_settings, settings.consumer_group + "-retry", topics.FANOUT_RETRY)
        assert len(receiver.received("/slow")) - failed["/slow"] < 24  # it held the commit point throughout
        await eventually(lambda: len(receiver.received("/slow")) - failed["/slow"] >= 24, timeout=60)
        retried = [r.body for r in receiver.received("/quick")[failed["/quick"] :]]
        assert sorted(retried) == sorted(encode(e) for e in events)  # each exactly once


async def test_sigkill_mid_batch_delivers_every_message_at_least_once(
    kafka_settings: KafkaSettings, world: World
) -> None:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.kafka_bootstrap_servers,
        "KAFKA_ENABLE_IDEMPOTENCE": "false",
        "KAFKA_SESSION_TIMEOUT_MS": "3000",
        "GRAVITY_FANOUT_PORT": str(free_port()),
        "GRAVITY_FANOUT_CONSUMER_GROUP": "fanout-kill-" + secrets.token_hex(4),
        "GRAVITY_LOG_LEVEL": "warning",
    }

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "gravity_fanout"], env=env)

    async def ready(proc: subprocess.Popen[bytes]) -> None:
        """A new group delivers what is published after it started (not before): wait for /readyz."""
        await wait_ready(f"http://127.0.0.1:{env['GRAVITY_FANOUT_PORT']}", proc=proc)

    async with running_receiver() as receiver:
        receiver.behave("/k1", delay=0.05)
        await world.app(receiver.url("/k1"))
        await world.app(receiver.url("/k2"))
        proc = start()
        try:
            await ready(proc)
            events = await world.send(300)
            await eventually(lambda: len(receiver.received("/k1")) >= 30, timeout=60)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            proc = start()
            wanted = {encode(e) for e in events}

            def complete() -> bool:
                return wanted <= set(bodies(receiver, "/k1")) and wanted <= set(bodies(receiver, "/k2"))

            await eventually(complete, timeout=60)
        finally:
            proc.kill()
            proc.wait()
    duplicates = len(receiver.received("/k1")) - len(set(bodies(receiver, "/k1")))
    print(f"redelivered after SIGKILL: {duplicates} of 300 to /k1")


async def test_a_flood_to_a_slow_endpoint_is_deferred_not_buffered(
    kafka_settings: KafkaSettings, world: World
) -> None:
    settings = fanout_settings(
        kafka_settings,
        GRAVITY_FANOUT_PER_APP_QUEUE=20,
        GRAVITY_FANOUT_PER_APP_CONCURRENCY=2,
        GRAVITY_FANOUT_RETRY_SCHEDULE="[600]",
        GRAVITY_FANOUT_RETRY_CONCURRENCY=4,
    )
    async with running_receiver() as receiver, running_fanout(settings):
        receiver.behave("/slow", delay=0.5)
        app_id, _ = await world.app(receiver.url("/slow"))
        await world.app(receiver.url("/fast"))
        events = await world.send(10_000)
        await eventually(lambda: len(receiver.received("/fast")) >= 10_000, timeout=180)
        async with TopicTail(kafka_settings, topics.FANOUT_RETRY, since=world.since) as tail:

            async def deferred() -> list[Any]:
                found = [
                    decode(topics.FANOUT_RETRY, r.value, r.headers)
                    for r in await tail.poll()
                    if r.key == app_id.encode()
                ]
                return found if len(found) >= 5000 else []

            queued = await eventually(deferred, timeout=30)
    # the slow lane held at most 20 jobs; most of the rest went to the durable retry queue, due at once
    assert {q.event.message_id for q in queued} <= {e.message_id for e in events}


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_an_attempt_the_broker_did_not_take_is_recorded_again_not_posted_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The endpoint got the POST; while it answered, the broker went away, so the attempt record timed out.
    Fanout sends the record again until a broker takes it, and the endpoint gets one POST — before, every
    timed-out record re-ran the attempt: a duplicate delivery (hundreds under overload, and through each
    broker restart). Its own broker, on the memory engine, restarted empty."""
    from gravity_devstack.kafka import TansuBroker

    caplog.set_level(logging.WARNING, logger="gravity_fanout")
    port = free_port()
    broker = TansuBroker(log=tmp_path / "tansu.log", port=port)
    try:
        own = KafkaSettings(KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers, KAFKA_ENABLE_IDEMPOTENCE=False)
        await ensure_topics(own)
        world = World(own, ids.new_tenant_id())
        async with running_receiver() as receiver, running_fanout(fanout_settings(own)):
            receiver.behave("/hook", delay=1.0)
            app_id, _ = await world.app(receiver.url("/hook"))
            [event] = await world.send()
            await eventually(lambda: receiver.received("/hook"), timeout=15)
            # the endpoint is still answering (in this loop: stop the broker off it), and then its
            # attempt record has nowhere to go
            await asyncio.to_thread(broker.stop)

            def not_taken() -> bool:  # fanout says the app's attempt record failed
                return any(
                    app_id in m or "did not take" in m for m in (r.getMessage() for r in caplog.records)
                )

            await eventually(not_taken, timeout=60)
            broker = await asyncio.to_thread(TansuBroker, log=tmp_path / "tansu2.log", port=port)
            await ensure_topics(own)  # the memory engine starts empty
            [attempt] = await deliveries(world, app_id, 1, timeout=60)
            assert isinstance(attempt, DeliveryAttempt)
            assert attempt.message_id == event.message_id and attempt.succeeded, attempt.error
            assert len(receiver.received("/hook")) == 1
    finally:
        broker.stop()


__all__ = ["asyncio"]
