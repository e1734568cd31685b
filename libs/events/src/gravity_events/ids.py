"""Identifier formats and timestamp rendering from the external contract.

- tenantId ``tenant_`` + 16 lowercase hex, appId ``app_`` + 16 hex, keyId ``key_`` + 16 hex (random);
- messageId ``msg_`` + 12 lowercase hex, derived deterministically from (tenantId, rcMessageId) so that
  replaying the raw topic reproduces exactly the same ids;
- timestamps are ISO 8601 UTC with milliseconds and ``Z``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import UTC, datetime

__all__ = [
    "APP_ID_RE",
    "KEY_ID_RE",
    "MESSAGE_ID_RE",
    "TENANT_ID_RE",
    "format_timestamp",
    "message_id_for",
    "new_app_id",
    "new_key_id",
    "new_tenant_id",
    "parse_timestamp",
    "utcnow",
]

TENANT_ID_RE = re.compile(r"^tenant_[0-9a-f]{16}$")
APP_ID_RE = re.compile(r"^app_[0-9a-f]{16}$")
KEY_ID_RE = re.compile(r"^key_[0-9a-f]{16}$")
MESSAGE_ID_RE = re.compile(r"^msg_[0-9a-f]{12}$")


def new_tenant_id() -> str:
    """A fresh random tenant id."""
    return "tenant_" + secrets.token_hex(8)


def new_app_id() -> str:
    """A fresh random app id."""
    return "app_" + secrets.token_hex(8)


def new_key_id() -> str:
    """A fresh random API key id (the public handle of a key, not its secret)."""
    return "key_" + secrets.token_hex(8)


def message_id_for(tenant_id: str, rc_message_id: str) -> str:
    """The messageId of RingCentral message ``rc_message_id`` received by ``tenant_id``.

    SHA-256 over both parts with a separator that cannot occur in a tenant id, truncated to the
    contract's 12 hex digits. Deterministic: the same pair always gives the same id.
    """
    digest = hashlib.sha256(f"{tenant_id}\x00{rc_message_id}".encode()).hexdigest()
    return "msg_" + digest[:12]


def utcnow() -> datetime:
    """The current time, timezone-aware UTC, truncated to the millisecond the contract shows."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def format_timestamp(value: datetime) -> str:
    """``2026-03-01T14:30:00.000Z``: UTC, milliseconds, ``Z``. Naive datetimes are refused."""
    if value.tzinfo is None:
        raise ValueError("naive datetime: timestamps must be timezone-aware")
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_timestamp(text: str) -> datetime:
    """Parse an ISO 8601 timestamp with an offset (``Z`` accepted) into aware UTC."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError("timestamp has no UTC offset")
    return value.astimezone(UTC)
