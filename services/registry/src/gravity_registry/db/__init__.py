"""Every SQL statement of the registry, one function per query (asyncpg), one module per domain.

Functions take the connection first and keyword-only arguments. Transactions are the caller's.

- :mod:`.migrations` the schema; :mod:`.health` the readiness round trip
- :mod:`.tenants` tenants and API keys
- :mod:`.apps` apps and their signing secrets
- :mod:`.connections` RingCentral connections and the subscriptions ingest verifies
- :mod:`.messages` stored messages, the projection's order locks, the messages API's reads
- :mod:`.deliveries` the delivery log
- :mod:`.outbox` change-stream records waiting to be published
- :mod:`.snapshot` every change stream's entities, read to republish them

Every function is re-exported here, so callers write ``db.get_app(conn, ...)``.
"""

from gravity_registry.db.apps import (
    count_apps,
    delete_app,
    disable_app,
    get_app,
    insert_app,
    list_apps,
    update_app,
)
from gravity_registry.db.connections import (
    claim_connection,
    connection_counts,
    delete_connection,
    delete_subscription,
    due_connections,
    get_connection,
    request_backfill_everywhere,
    save_check,
    subscription_tenant,
    upsert_connection,
    upsert_subscription,
)
from gravity_registry.db.deliveries import DeliveryRow, insert_deliveries, list_deliveries
from gravity_registry.db.health import ping
from gravity_registry.db.messages import (
    MessageRow,
    get_message,
    insert_messages,
    last_published,
    latest_message_time,
    list_messages_after,
    list_messages_before,
    lock_tenants,
    mark_published,
    message_position,
    restamp_messages,
    unlock_tenants,
    unpublished_messages,
)
from gravity_registry.db.migrations import apply_migrations
from gravity_registry.db.outbox import (
    OUTBOX_LOCK,
    REPUBLISH_LOCK,
    delete_outbox,
    enqueue_outbox,
    enqueue_outbox_many,
    outbox_depth,
    pending_outbox,
    pending_outbox_keys,
    try_outbox_lock,
    try_republish_lock,
)
from gravity_registry.db.snapshot import all_api_keys, all_apps, all_subscriptions
from gravity_registry.db.tenants import (
    create_api_key,
    create_tenant,
    delete_api_key,
    find_api_key,
    get_tenant,
    known_tenants,
    list_api_keys,
    list_tenants,
    lock_tenant,
    touch_api_key,
)

__all__ = [
    "OUTBOX_LOCK",
    "REPUBLISH_LOCK",
    "DeliveryRow",
    "MessageRow",
    "all_api_keys",
    "all_apps",
    "all_subscriptions",
    "apply_migrations",
    "claim_connection",
    "connection_counts",
    "count_apps",
    "create_api_key",
    "create_tenant",
    "delete_api_key",
    "delete_app",
    "delete_connection",
    "delete_outbox",
    "delete_subscription",
    "disable_app",
    "due_connections",
    "enqueue_outbox",
    "enqueue_outbox_many",
    "find_api_key",
    "get_app",
    "get_connection",
    "get_message",
    "get_tenant",
    "insert_app",
    "insert_deliveries",
    "insert_messages",
    "known_tenants",
    "last_published",
    "latest_message_time",
    "list_api_keys",
    "list_apps",
    "list_deliveries",
    "list_messages_after",
    "list_messages_before",
    "list_tenants",
    "lock_tenant",
    "lock_tenants",
    "mark_published",
    "message_position",
    "outbox_depth",
    "pending_outbox",
    "pending_outbox_keys",
    "ping",
    "request_backfill_everywhere",
    "restamp_messages",
    "save_check",
    "subscription_tenant",
    "touch_api_key",
    "try_outbox_lock",
    "try_republish_lock",
    "unlock_tenants",
    "unpublished_messages",
    "update_app",
    "upsert_connection",
    "upsert_subscription",
]
