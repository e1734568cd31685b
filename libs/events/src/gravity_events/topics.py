"""Topic names and their shapes. Every service names topics only through these constants.

Data topics carry events; ``registry.*`` topics are compacted change streams keyed by entity id whose
latest record per key is the entity's current state, replayed from the beginning by their readers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "ALL_TOPICS",
    "API_KEYS",
    "APPS",
    "DEAD_LETTER",
    "DELIVERIES",
    "DELIVERY_REQUESTS",
    "FANOUT_RETRY",
    "RC_RAW",
    "SMS_INBOUND",
    "SUBSCRIPTIONS",
    "TopicSpec",
]

RC_RAW = "gravity.rc.raw.v1"
"""Verified RingCentral SMS notifications, as ingest accepted them; key = rcMessageId."""

SMS_INBOUND = "gravity.sms.inbound.v1"
"""Canonical ``sms_inbound`` events, one per stored message; key = tenantId (per-tenant order)."""

SUBSCRIPTIONS = "gravity.registry.subscriptions.v1"
"""Compacted: RingCentral subscription → tenant and verification-token hash; key = subscriptionId."""

API_KEYS = "gravity.registry.api-keys.v1"
"""Compacted: API key hashes and revocations; key = keyId."""

APPS = "gravity.registry.apps.v1"
"""Compacted: app webhook configuration; key = appId."""

DELIVERIES = "gravity.deliveries.v1"
"""Webhook delivery attempts; key = appId."""

DELIVERY_REQUESTS = "gravity.fanout.requests.v1"
"""On-demand deliveries asked for through the registry API; key = appId."""

FANOUT_RETRY = "gravity.fanout.retry.v1"
"""Fanout's durable retry queue: failed deliveries with the time of their next attempt; key = appId.

One partition per step of the retry schedule (the producer picks it), so every record of a partition
waits about as long as the others and the partition's head is always the next one due."""

DEAD_LETTER = "gravity.dead-letter.v1"
"""Records no consumer could decode, copied with their origin in headers."""


@dataclass(frozen=True)
class TopicSpec:
    """How the bootstrap step creates a topic."""

    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)


_MAX_BYTES = {"max.message.bytes": str(4 * 1024 * 1024 + 64 * 1024)}
"""Every topic takes the producers' largest record (``gravity_events.kafka.MAX_RECORD_BYTES``) and its
batch overhead: Apache Kafka's default of 1 MiB would refuse a raw record carrying a body near ingest's
1 MiB limit, and RingCentral would redeliver it forever."""
_COMPACT = {"cleanup.policy": "compact", **_MAX_BYTES}

ALL_TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(RC_RAW, 12, _MAX_BYTES),
    TopicSpec(SMS_INBOUND, 12, _MAX_BYTES),
    TopicSpec(SUBSCRIPTIONS, 1, _COMPACT),
    TopicSpec(API_KEYS, 1, _COMPACT),
    TopicSpec(APPS, 1, _COMPACT),
    TopicSpec(DELIVERIES, 6, _MAX_BYTES),
    TopicSpec(DELIVERY_REQUESTS, 6, _MAX_BYTES),
    TopicSpec(FANOUT_RETRY, 8, _MAX_BYTES),
    TopicSpec(DEAD_LETTER, 1, _MAX_BYTES),
)
