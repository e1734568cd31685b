"""Fanout's retries: the schedule and its rules, retrying until success, giving up, disabling an app."""

from __future__ import annotations

import random

from tests.fanout.conftest import (
    World,
    deliveries,
    fanout_settings,
    running_fanout,
)
from tests.support import (
    eventually,
    keyed_events,
    running_receiver,
)

from gravity_events import topics
from gravity_events.models import AppEndpointDisabled
from gravity_events.settings import KafkaSettings
from gravity_fanout.handlers import RetryPolicy
from gravity_fanout.settings import DEFAULT_RETRY_SCHEDULE
from gravity_webhooks import DeliveryResult


def test_retry_schedule_and_its_rules() -> None:
    policy = RetryPolicy(DEFAULT_RETRY_SCHEDULE, jitter=0.1, rng=random.Random(7))
    failed = DeliveryResult(ok=False, status=500, body="", error="HTTP 500", duration_ms=1)
    delays = [policy.delay(n, failed) for n in range(1, 10)]
    expected = [5, 30, 120, 600, 1800, 7200, 21600, 43200]
    for delay, base in zip(delays[:8], expected, strict=True):
        assert delay is not None and base * 0.9 <= delay <= base * 1.1
    assert delays[8] is None  # nine attempts over about 21 hours, then it stops
    assert len(set(delays[:8]) & set(expected)) == 0  # each step jittered, so failures do not retry in step
    exact = RetryPolicy(DEFAULT_RETRY_SCHEDULE, jitter=0.0)
    window = [exact.delay(n, failed) for n in range(1, 10)]
    assert window == [*expected, None]
    assert sum(d for d in window if d is not None) < 24 * 3600  # the last attempt is within a day
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

        [decision] = await keyed_events(
            kafka_settings,
            topics.DELIVERIES,
            app_id,
            since=world.since,
            where=lambda e: isinstance(e, AppEndpointDisabled),
            timeout=30,
        )
        assert (decision.disabled_at - decision.failing_since).total_seconds() >= 1.0
        seen = len(receiver.received("/dead"))
        await world.send(2)
        await world.app(receiver.url("/other"))  # a marker app: fanout has read past the new messages
        await world.send()
        await eventually(lambda: receiver.received("/other"), timeout=10)
    assert len(receiver.received("/dead")) == seen  # nothing more was spent on it
