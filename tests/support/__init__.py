"""Helpers the test modules share, imported as ``from tests.support import ...``.

- :mod:`~tests.support.waits`: ``eventually`` and ``wait_ready``, polling with a deadline;
- :mod:`~tests.support.factories`: contract-shaped notifications and the events made of them;
- :mod:`~tests.support.kafka`: ``publish_events``, ``TopicTail`` and ``keyed_events`` on the real broker;
- :mod:`~tests.support.contract`: ``assert_error`` and the ``sms_inbound`` field order;
- :mod:`~tests.support.servers` and :mod:`~tests.support.receivers`: loopback ports, uvicorn servers and
  the recording webhook receiver;
- :mod:`~tests.support.processes` (services as child processes) and :mod:`~tests.support.otlp` (an OTLP
  trace receiver), imported from their modules.
"""

from tests.support.contract import SMS_INBOUND_FIELDS, assert_error
from tests.support.factories import (
    SMS_EVENT,
    notification,
    raw_event,
    subscription_active,
    subscription_removed,
)
from tests.support.kafka import TopicTail, keyed_events, publish_events
from tests.support.receivers import Behaviour, Received, WebhookReceiver, running_receiver
from tests.support.servers import free_port, serve, serve_in_thread
from tests.support.waits import eventually, wait_ready

__all__ = [
    "SMS_EVENT",
    "SMS_INBOUND_FIELDS",
    "Behaviour",
    "Received",
    "TopicTail",
    "WebhookReceiver",
    "assert_error",
    "eventually",
    "free_port",
    "keyed_events",
    "notification",
    "publish_events",
    "raw_event",
    "running_receiver",
    "serve",
    "serve_in_thread",
    "subscription_active",
    "subscription_removed",
    "wait_ready",
]
