"""Fanout fixtures: in-process fanout apps on the module's broker, and a world to publish apps and SMS into.

Apps are published on the apps change stream exactly as the registry does (secrets encrypted), messages on
``sms_inbound``; tests check what the receivers get and what fanout records on the deliveries topic.
"""

from __future__ import annotations

import contextlib
import random
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from tests.support import WebhookReceiver, eventually, keyed_events, publish_events

from gravity_events import ids, topics
from gravity_events.codec import encode, encode_headers
from gravity_events.kafka import make_producer
from gravity_events.models import AppUpserted, DeliveryRetry, EncryptedSecret, SmsInbound
from gravity_events.settings import KafkaSettings
from gravity_fanout.app import create_app
from gravity_fanout.handlers import RETRY_GROUP_HEADER
from gravity_fanout.settings import Settings
from gravity_webhooks import DEVELOPMENT_SECRET_KEY, SecretBox, new_signing_secret

BOX = SecretBox(DEVELOPMENT_SECRET_KEY)


def fanout_settings(kafka: KafkaSettings, **overrides: Any) -> Settings:
    """Settings for a fanout on ``kafka`` with its own consumer group and a fast retry schedule."""
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
    """A fanout app with its lifespan entered for the duration of the block."""
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
    """The registry's change event for an app with these (secret, expires_at) pairs, encrypted."""
    return AppUpserted(
        app_id=app_id,
        tenant_id=tenant_id,
        webhook_url=url,
        disabled=disabled,
        signing_secrets=tuple(EncryptedSecret(ciphertext=BOX.encrypt(s), expires_at=e) for s, e in secrets_),
        updated_at=ids.utcnow(),
    )


def sms(tenant_id: str, text: str = "hello") -> SmsInbound:
    """A fresh canonical message of ``tenant_id``."""
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
    """One tenant's apps and messages on a broker."""

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
        """Publish ``n`` fresh messages of the tenant on ``sms_inbound``."""
        events = [sms(self.tenant_id, f"{text} {i}") for i in range(n)]
        await publish_events(self.kafka, topics.SMS_INBOUND, *((self.tenant_id, e) for e in events))
        return events


@pytest.fixture
def world(kafka_settings: KafkaSettings) -> World:
    """A fresh tenant on the module's broker."""
    return World(kafka_settings, ids.new_tenant_id())


async def deliveries(world: World, app_id: str, count: int, timeout: float = 15) -> list[Any]:
    """The records of ``app_id`` on the deliveries topic since the test began, once there are ``count``."""
    return await keyed_events(
        world.kafka, topics.DELIVERIES, app_id, count=count, since=world.since, timeout=timeout
    )


def bodies(receiver: WebhookReceiver, path: str) -> list[bytes]:
    """The bodies ``path`` received, in arrival order."""
    return [r.body for r in receiver.received(path)]


def due_retry(world: World, app_id: str, event: SmsInbound) -> DeliveryRetry:
    """A second attempt of ``event`` to ``app_id``, due now."""
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
