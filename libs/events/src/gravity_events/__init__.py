"""gravity_events: the only code Gravity services share about Kafka.

Event models (:mod:`.models`), topic names (:mod:`.topics`), the codec (:mod:`.codec`), the
RingCentral notification parser (:mod:`.ringcentral`), identifiers (:mod:`.ids`) and Kafka helpers
(:mod:`.kafka`).
"""

from gravity_events import codec, ids, kafka, models, ringcentral, topics
from gravity_events.codec import CodecError, decode, encode, encode_headers
from gravity_events.models import (
    ApiKeyActive,
    ApiKeyRevoked,
    AppDeleted,
    AppEndpointDisabled,
    AppUpserted,
    DeliveryAttempt,
    DeliveryGuardCleared,
    DeliveryRequested,
    DeliveryRetry,
    EncryptedSecret,
    Event,
    RcNotification,
    RetriesFinished,
    SmsInbound,
    SubscriptionActive,
    SubscriptionRemoved,
)
from gravity_events.settings import KafkaSettings

__all__ = [
    "ApiKeyActive",
    "ApiKeyRevoked",
    "AppDeleted",
    "AppEndpointDisabled",
    "AppUpserted",
    "CodecError",
    "DeliveryAttempt",
    "DeliveryGuardCleared",
    "DeliveryRequested",
    "DeliveryRetry",
    "EncryptedSecret",
    "Event",
    "KafkaSettings",
    "RcNotification",
    "RetriesFinished",
    "SmsInbound",
    "SubscriptionActive",
    "SubscriptionRemoved",
    "codec",
    "decode",
    "encode",
    "encode_headers",
    "ids",
    "kafka",
    "models",
    "ringcentral",
    "topics",
]
