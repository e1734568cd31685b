"""Fanout through rebalances, a SIGKILL and a broker that goes away: nothing lost, nothing sent twice."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from tests.fanout.conftest import (
    World,
    bodies,
    deliveries,
    fanout_settings,
    running_fanout,
)
from tests.support import (
    eventually,
    free_port,
    running_receiver,
    wait_ready,
)

from gravity_events import ids, topics
from gravity_events.codec import encode
from gravity_events.kafka import ensure_topics
from gravity_events.models import DeliveryAttempt
from gravity_events.settings import KafkaSettings


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
    everything after the committed offset to every app (several copies of each message per rebalance)."""
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
    app gets each retry once: the copy keeps its bookkeeping through the revoke instead of re-running the
    retries from the committed offset."""
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


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_an_attempt_the_broker_did_not_take_is_recorded_again_not_posted_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The endpoint got the POST; while it answered, the broker went away, so the attempt record timed out.
    Fanout sends the record again until a broker takes it, and the endpoint gets one POST: re-running the
    attempt for a record that timed out would deliver it twice (hundreds of times under overload, and
    through each broker restart). The test has its own broker, on the memory engine, restarted empty."""
    from gravity_devstack.kafka import TansuBroker

    caplog.set_level(logging.WARNING, logger="gravity_fanout")
    port = free_port()
    broker = TansuBroker(log=tmp_path / "tansu.log", port=port)
    try:
        own = KafkaSettings(KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers, KAFKA_ENABLE_IDEMPOTENCE=False)
        await ensure_topics(own)
        world = World(own, ids.new_tenant_id())
        # the answer comes well inside the first-attempt window: the attempt's own record is what the
        # broker does not take (not a guard for an attempt outliving the window; see test_guards); the
        # endpoint answers once the broker process is gone, which takes up to its 5 s stop grace
        settings = fanout_settings(
            own, GRAVITY_FANOUT_FIRST_ATTEMPT_WINDOW_SECONDS=30.0, GRAVITY_FANOUT_TIMEOUT_SECONDS=20.0
        )
        async with running_receiver() as receiver, running_fanout(settings):
            answer = asyncio.Event()
            receiver.behave("/hook", release=answer)
            app_id, _ = await world.app(receiver.url("/hook"))
            [event] = await world.send()
            await eventually(lambda: receiver.received("/hook"), timeout=15)
            # the endpoint answers only once the broker is gone (in this loop: stop the broker off it),
            # so its attempt record has nowhere to go
            await asyncio.to_thread(broker.stop)
            answer.set()

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
