"""Fanout's deliveries: the exact bytes, headers and signatures an endpoint gets, and which apps get them."""

from __future__ import annotations

import time
from datetime import timedelta

from aiokafka import TopicPartition
from tests.fanout.conftest import (
    World,
    app_event,
    deliveries,
    fanout_settings,
    running_fanout,
    sms,
)
from tests.fanout.test_crash_bound import group_reader, positions
from tests.support import (
    eventually,
    publish_events,
    running_receiver,
)

from gravity_events import ids, topics
from gravity_events.codec import encode
from gravity_events.models import DeliveryAttempt
from gravity_events.settings import KafkaSettings
from gravity_webhooks import new_signing_secret, verify


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


async def test_a_message_published_twice_is_delivered_once(
    kafka_settings: KafkaSettings, world: World
) -> None:
    """The registry publishes a batch again when it dies, or loses PostgreSQL, between publishing and
    marking it; the copy that handled the message already does not deliver it again. Old behaviour: two
    POSTs of the same message to every app."""
    async with running_receiver() as receiver, running_fanout(fanout_settings(kafka_settings)):
        await world.app(receiver.url("/hook"))
        [event] = await world.send()
        await eventually(lambda: receiver.received("/hook"), timeout=10)
        await publish_events(kafka_settings, topics.SMS_INBOUND, (world.tenant_id, event))
        [after] = await world.send(1, "after")  # same partition (keyed by tenant), read after the repeat
        await eventually(lambda: len(receiver.received("/hook")) >= 2, timeout=10)
    assert [r.body for r in receiver.received("/hook")] == [encode(event), encode(after)]


async def test_a_message_published_twice_while_its_first_dispatch_is_under_way_is_delivered_once(
    kafka_settings: KafkaSettings, world: World
) -> None:
    """The second record of a message can be read while the first is still being delivered (another app
    hangs, so the first dispatch waits out that app's window). Old behaviour: the copy remembered what it
    handled only once every app's first attempt had ended, and the healthy app got the message twice."""
    settings = fanout_settings(kafka_settings, GRAVITY_FANOUT_FIRST_ATTEMPT_WINDOW_SECONDS=4.0)
    async with running_receiver() as receiver, running_fanout(settings):
        receiver.behave("/hang", hang=True)
        await world.app(receiver.url("/hang"))
        await world.app(receiver.url("/ok"))
        event = sms(world.tenant_id, "twice")
        await publish_events(kafka_settings, topics.SMS_INBOUND, *((world.tenant_id, event),) * 2)
        [after] = await world.send(1, "after")  # same partition (keyed by tenant), read after both
        await eventually(lambda: len(receiver.received("/ok")) >= 2, timeout=15)
        await eventually(lambda: len(receiver.received("/hang")) >= 2, timeout=15)
    assert [r.body for r in receiver.received("/ok")] == [encode(event), encode(after)]
    assert [r.body for r in receiver.received("/hang")] == [encode(event), encode(after)]


async def test_the_linger_setting_reaches_the_attempt_log_producer(
    kafka_settings: KafkaSettings, world: World
) -> None:
    """``GRAVITY_FANOUT_LINGER_MS`` is how long an attempt's record may wait for others before it is sent:
    the message is committed only once the broker took that record, so no sooner than the linger after
    its POST arrived."""
    settings = fanout_settings(kafka_settings, GRAVITY_FANOUT_LINGER_MS=500)
    async with (
        running_receiver() as receiver,
        group_reader(kafka_settings, settings.consumer_group) as group,
        running_fanout(settings),
    ):
        await world.app(receiver.url("/ok"))
        await world.send()
        tp, offset, _ = await positions(kafka_settings, world, 1)
        assert isinstance(tp, TopicPartition) and isinstance(offset, int)

        async def committed() -> bool:
            return (await group.committed(tp) or 0) > offset

        await eventually(committed, timeout=15, interval=0.02)
        [arrived] = receiver.received("/ok")
        assert time.monotonic() - arrived.at >= 0.45, (
            "the attempt's record waited its linger before it was sent"
        )
