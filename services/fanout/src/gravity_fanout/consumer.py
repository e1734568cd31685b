"""The ``sms_inbound`` loop: each message becomes one first attempt per target app, on that app's lane.

An offset is committed only when every job of its message and of every earlier message of the partition
has finished its first attempt (success, or failure recorded and its retry queued): at-least-once (see
:mod:`gravity_fanout.windows`). A partition the group never committed starts where the topic was when
this process started, so a first deployment does not send the whole history to today's apps. A message
this copy handled already for an app (the registry published it twice) is not delivered to that app again.

One tenant holds at most ``GRAVITY_FANOUT_TENANT_SHARE`` of the ``max_in_flight`` slots: a message of a
tenant that holds its share already is not worked on here but handed to the retry queue at once (a first
attempt per target app, due now), so a flood of one tenant, or a tenant with hundreds of apps, never
keeps another tenant's messages from being read and delivered.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from functools import partial

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from gravity_events import topics
from gravity_events.codec import CodecError
from gravity_events.kafka import dead_letter, decode_record, offsets_at
from gravity_events.models import SmsInbound
from gravity_events.tracing import Headers
from gravity_fanout.apps import App, AppTable
from gravity_fanout.lanes import Lanes
from gravity_fanout.settings import Settings
from gravity_fanout.windows import REVOKE_SETTLE, WindowedConsumer

__all__ = ["RECENTLY_HANDLED", "InboundConsumer"]

RECENTLY_HANDLED = 100_000
"""(app, message) pairs remembered per copy. The registry publishes a message again when it dies, or
loses PostgreSQL, between publishing a batch and marking it published; a copy that handled the message
already (attempted it, or handed it to the retry queue) does not deliver it again. About 100 bytes a
pair; 100,000 cover over 15 minutes at 100 messages/s to one app."""


class InboundConsumer(WindowedConsumer):
    """``sms_inbound`` → a job per target app; commit the finished prefix of each partition."""

    def __init__(self, settings: Settings, apps: AppTable, lanes: Lanes, producer: AIOKafkaProducer) -> None:
        super().__init__(
            settings, topic=topics.SMS_INBOUND, group_id=settings.consumer_group, max_records=500
        )
        self._apps = apps
        self._lanes = lanes
        self._producer = producer
        self._start_ms = int(time.time() * 1000)  # a new group starts here (see _start_position)
        self._tenant_cap = settings.tenant_cap(settings.max_in_flight)
        self._tenant_load: Counter[str] = Counter()
        """Messages of each tenant being worked on (not handed off)."""
        self._handled: OrderedDict[tuple[str, str], None] = OrderedDict()
        """(app, message) pairs whose first attempt this copy finished, newest last (``RECENTLY_HANDLED``)."""
        self._under_way: set[tuple[str, str]] = set()
        """(app, message) pairs whose first attempt this copy is making: a second record of the message read
        meanwhile is not delivered again (the first holds the commit point until it is done)."""

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Before the partitions move, end every first-attempt window (waiting jobs go to the retry queue,
        attempts under way are guarded) and wait for that, at most ``REVOKE_SETTLE`` seconds, so the commit
        covers what this copy read: the next owner starts after it, and a healthy app receives nothing of it
        again."""
        if revoked:
            self._lanes.hurry()
            await self._settle(REVOKE_SETTLE)
        await super().on_partitions_revoked(revoked)

    async def _start_position(self, tp: TopicPartition) -> int:
        """A brand-new group (the first deployment) must not send every stored message to today's apps: it
        starts where the topic was when this process started (``offsets_at``)."""
        return (await offsets_at(self._consumer, [tp], self._start_ms))[tp]

    async def _handle(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        for record in records:
            if not await self._spawn(tp, record.offset, partial(self._dispatch, record)):
                break  # stopping: the rest stays unread (never block a stop on a full window)

    async def _dispatch(self, record: ConsumerRecord) -> bool:
        """Deliver one record; False when stopping with work undone (read again after the restart)."""
        try:
            envelope = decode_record(record)
        except CodecError as exc:
            await dead_letter(self._producer, record, exc)
            return True
        event = envelope.event
        if not isinstance(event, SmsInbound):
            return True
        tenant = event.tenant_id
        if self._tenant_load[tenant] >= self._tenant_cap:  # its share is taken: the retry queue has it
            return await self._deliver(event, envelope.headers, self._lanes.defer)
        self._tenant_load[tenant] += 1
        try:
            return await self._deliver(event, envelope.headers, self._lanes.submit)
        finally:
            self._tenant_load[tenant] -= 1
            if not self._tenant_load[tenant]:
                del self._tenant_load[tenant]

    async def _deliver(
        self,
        event: SmsInbound,
        headers: Headers,
        submit: Callable[[App, SmsInbound, Headers], Awaitable[None]],
    ) -> bool:
        """First attempts to every target app this copy has not handled the message for already; a job
        that could not be recorded is tried again."""
        message = event.message_id
        pending = [
            a
            for a in self._apps.targets(event.tenant_id)
            if (a.app_id, message) not in self._handled and (a.app_id, message) not in self._under_way
        ]
        claimed = [(a.app_id, message) for a in pending]
        self._under_way.update(claimed)  # a second record of the message read meanwhile is passed over
        try:
            return await self._submit_all(event, headers, submit, pending)
        finally:
            self._under_way.difference_update(claimed)

    async def _submit_all(
        self,
        event: SmsInbound,
        headers: Headers,
        submit: Callable[[App, SmsInbound, Headers], Awaitable[None]],
        pending: list[App],
    ) -> bool:
        """Submit to ``pending`` until every job is taken (False when stopping first)."""
        message = event.message_id
        while pending:
            outcomes = await asyncio.gather(
                *(submit(app, event, headers) for app in pending), return_exceptions=True
            )
            for app, outcome in zip(pending, outcomes, strict=True):
                if not isinstance(outcome, BaseException):
                    self._remember(app.app_id, message)
            pending = [
                app
                for app, outcome in zip(pending, outcomes, strict=True)
                if isinstance(outcome, Exception) and app in self._apps.targets(event.tenant_id)
            ]
            if pending and not await self._pause_or_stop():  # the broker refused the attempt record
                return False
        return True

    def _remember(self, app_id: str, message_id: str) -> None:
        self._handled[(app_id, message_id)] = None
        if len(self._handled) > RECENTLY_HANDLED:
            self._handled.popitem(last=False)
