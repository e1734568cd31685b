"""Fanout's lanes: a slow, hanging or failing endpoint, or another deployment's retries, cost only their own app."""

from __future__ import annotations

from asgi_lifespan import LifespanManager
from tests.fanout.conftest import (
    RUNNING,
    World,
    bodies,
    deliveries,
    due_retry,
    fanout_settings,
    publish_retries,
    running_fanout,
    sms,
)
from tests.support import (
    eventually,
    free_port,
    running_receiver,
)

from gravity_events.codec import encode
from gravity_events.settings import KafkaSettings
from gravity_fanout.app import create_app


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


async def test_shutdown_is_prompt_when_every_slot_waits_on_a_hanging_endpoint(
    kafka_settings: KafkaSettings, world: World
) -> None:
    """Both consumers' windows full of work for an endpoint that never answers (60 s timeout here): stopping
    must not wait for a slot to free, or a stopping copy would hold its process (and a test run) for the
    endpoint's whole timeout."""
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
