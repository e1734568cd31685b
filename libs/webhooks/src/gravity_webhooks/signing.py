"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

``webhook-signature`` is a space-separated list of ``v1,<base64 HMAC-SHA256>`` over
``{webhook-id}.{webhook-timestamp}.{body}``, keyed with the base64-decoded part of ``whsec_…``. During a
secret rotation the header carries one signature per live secret; a receiver accepts any match.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping, Sequence

__all__ = [
    "SECRET_PREFIX",
    "SignatureError",
    "new_signing_secret",
    "sign",
    "signature_header",
    "verify",
]

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret


class SignatureError(ValueError):
    """A webhook's signature headers are missing, stale, or match no secret."""


def new_signing_secret() -> str:
    """``whsec_`` + base64 of 32 random bytes (the contract asks for at least 24)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("signing secrets start with whsec_")
    return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature of ``body``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets_: Sequence[str], message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per secret, space-separated."""
    if not secrets_:
        raise ValueError("at least one signing secret is needed")
    return " ".join(sign(s, message_id, timestamp, body) for s in secrets_)


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_seconds: int = 300,
    now: float | None = None,
) -> None:
    """Check a received webhook as a Standard Webhooks receiver does; raise :class:`SignatureError`.

    ``headers`` lookups are case-insensitive when given an httpx/Starlette headers object.
    """
    message_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    header = headers.get("webhook-signature")
    if not message_id or not stamp or not header:
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError as exc:
        raise SignatureError("webhook-timestamp is not an integer") from exc
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        raise SignatureError("webhook-timestamp is outside the tolerance")
    expected = sign(secret, message_id, timestamp, body)
    for candidate in header.split():
        if hmac.compare_digest(candidate, expected):
            return
    raise SignatureError("no signature matches")
