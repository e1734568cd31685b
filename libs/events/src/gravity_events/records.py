"""A consumed record as Gravity sees it: decoded, with where it came from."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import ConsumerRecord

from gravity_events.codec import decode
from gravity_events.models import Event

__all__ = ["Envelope", "decode_record", "record_headers"]


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded record and where it came from."""

    topic: str
    partition: int
    offset: int
    key: str | None
    timestamp_ms: int
    headers: dict[str, bytes]
    event: Event


def record_headers(record: ConsumerRecord) -> dict[str, bytes]:
    """A record's headers as a dict (last value wins)."""
    return {k: bytes(v) for k, v in (record.headers or ())}


def decode_record(record: ConsumerRecord) -> Envelope:
    """A consumed record as an :class:`Envelope`; raise ``CodecError`` if it is not a valid event."""
    headers = record_headers(record)
    event = decode(record.topic, record.value, list(headers.items()))
    key = record.key.decode(errors="replace") if record.key is not None else None
    return Envelope(record.topic, record.partition, record.offset, key, record.timestamp, headers, event)
