"""Opaque keyset cursors: a position (a timestamp and an id) as base64url JSON, and back.

A cursor that does not decode is 422 ``validation_error`` naming ``cursor``.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime

import orjson

from gravity_registry.errors import ValidationFailed

__all__ = ["decode_position", "encode_position"]


def encode_position(at: datetime, item_id: str) -> str:
    """The cursor of the position (``at``, ``item_id``)."""
    raw = orjson.dumps([at.isoformat(), item_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_position(cursor: str) -> tuple[datetime, str]:
    """The position a cursor of :func:`encode_position` names; else :class:`ValidationFailed`."""
    try:
        at, item_id = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        moment = datetime.fromisoformat(at)
        if moment.tzinfo is None or not isinstance(item_id, str):
            raise ValueError("bad cursor")
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError) as exc:
        raise ValidationFailed(
            "cursor is not valid", [{"field": "cursor", "message": "use nextCursor as returned"}]
        ) from exc
    return moment, item_id
