"""What the registry does, as plain async functions over a pool and a producer, one module per domain.

- :mod:`.tenants` tenants, API keys, authentication
- :mod:`.apps` apps, signing secrets, test webhooks
- :mod:`.connection` RingCentral connect/read/disconnect; :mod:`.keeper` keeps connections alive;
  :mod:`.subscriptions` the subscription records ingest verifies
- :mod:`.messages` the messages API and a message's shapes; :mod:`.projection` raw notifications to
  stored messages and ``sms_inbound``
- :mod:`.deliveries` the delivery log and re-sends
- :mod:`.outbox` the change stream's transactional outbox; :mod:`.republish` the change streams rebuilt
  from the database when the broker lost them

Every change that other services must learn goes through the outbox in the same transaction as the
change itself. Handlers raise :mod:`gravity_registry.errors`; they never build HTTP responses.
"""

from gravity_registry.handlers.apps import (
    ROTATION_OVERLAP,
    app_event,
    app_json,
    checked_webhook_url,
    create_app,
    delete_app,
    get_app,
    list_apps,
    rotate_secret,
    send_test_webhook,
    test_payload,
    update_app,
)
from gravity_registry.handlers.connection import Connections, connection_json
from gravity_registry.handlers.deliveries import (
    delivery_json,
    list_deliveries,
    project_deliveries,
    request_delivery,
)
from gravity_registry.handlers.keeper import ConnectionKeeper
from gravity_registry.handlers.messages import get_message, list_messages, message_json, sms_event
from gravity_registry.handlers.outbox import OutboxPublisher, enqueue_event
from gravity_registry.handlers.projection import project_batch, stamp_in_gateway_order
from gravity_registry.handlers.republish import StreamState, drain_outbox, republish
from gravity_registry.handlers.subscriptions import (
    activate_subscription,
    deactivate_subscription,
    put_subscription,
    remove_subscription,
)
from gravity_registry.handlers.tenants import (
    API_KEY_PREFIX,
    Caller,
    authenticate,
    create_api_key,
    create_tenant,
    list_api_keys,
    list_tenants,
    revoke_api_key,
    sha256_hex,
)

__all__ = [
    "API_KEY_PREFIX",
    "ROTATION_OVERLAP",
    "Caller",
    "ConnectionKeeper",
    "Connections",
    "OutboxPublisher",
    "StreamState",
    "activate_subscription",
    "app_event",
    "app_json",
    "authenticate",
    "checked_webhook_url",
    "connection_json",
    "create_api_key",
    "create_app",
    "create_tenant",
    "deactivate_subscription",
    "delete_app",
    "delivery_json",
    "drain_outbox",
    "enqueue_event",
    "get_app",
    "get_message",
    "list_api_keys",
    "list_apps",
    "list_deliveries",
    "list_messages",
    "list_tenants",
    "message_json",
    "project_batch",
    "project_deliveries",
    "put_subscription",
    "remove_subscription",
    "republish",
    "request_delivery",
    "revoke_api_key",
    "rotate_secret",
    "send_test_webhook",
    "sha256_hex",
    "sms_event",
    "stamp_in_gateway_order",
    "test_payload",
    "update_app",
]
