"""Secrets at rest and in transit between services: Fernet (AES-128-CBC + HMAC-SHA256, authenticated).

Each key is derived from a value of ``GRAVITY_SECRET_KEY`` with HKDF-SHA256, so any string of enough
entropy works and the same value gives the same key in the registry (which encrypts signing secrets,
client secrets, JWTs and tokens) and in fanout (which decrypts signing secrets to sign).

``GRAVITY_SECRET_KEY`` may hold several keys separated by commas (MultiFernet): the first encrypts, every
one decrypts. A single key (no comma) is the one-key case of the same rule, so ciphertexts made before
rotation existed still decrypt. New keys must not contain commas; a value with commas also decrypts with
the whole value taken as one key, so a key set before rotation existed that happens to contain a comma
still opens what it encrypted.

Rotating the key without downtime:

1. Generate a new key (``python -c "import secrets; print(secrets.token_urlsafe(48))"``).
2. Set ``GRAVITY_SECRET_KEY=<new>,<old>`` on fanout and restart it, then the same on the registry and
   restart it. Fanout goes first because it only decrypts: it can then open what the registry
   encrypts with ``<new>`` from its restart on.
3. Re-encrypt every stored ciphertext with :meth:`SecretBox.rotate` (each becomes one under ``<new>``;
   the plaintext never leaves the call), and re-publish what fanout reads from the apps topic.
4. When nothing encrypted with ``<old>`` remains where a service reads it, set
   ``GRAVITY_SECRET_KEY=<new>`` on both and restart them; ``<old>`` can then be destroyed.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "DEVELOPMENT_SECRET_KEY",
    "MIN_KEY_LENGTH",
    "DecryptionError",
    "SecretBox",
    "is_development_key",
    "parse_secret_keys",
]

_INFO = b"gravity-sms secrets v1"

MIN_KEY_LENGTH = 16
"""Shortest value SecretBox accepts for one key (services' production checks may demand more)."""

DEVELOPMENT_SECRET_KEY = "gravity-development-secret-key-do-not-use-in-production"  # noqa: S105
"""What registry and fanout use when ``GRAVITY_SECRET_KEY`` is unset in development (published, so
never secret); production refuses to start with it (see :func:`is_development_key`)."""


class DecryptionError(ValueError):
    """The ciphertext was not made with any of the keys, or was altered."""


def parse_secret_keys(value: str) -> list[str]:
    """The keys of a ``GRAVITY_SECRET_KEY`` value: comma-separated, surrounding white space ignored,
    first one first. Empty parts are kept (as ``""``) so that length checks refuse them."""
    return [part.strip() for part in value.split(",")]


def is_development_key(value: str) -> bool:
    """True if any key of the ``GRAVITY_SECRET_KEY`` value ``value`` is the published development key.

    Each key is compared in constant time and every key is compared, so the answer's timing says
    nothing about the keys. Production must refuse such a value: whoever holds the development key can
    decrypt (and forge) what it protects, even when it is only a decrypt-only key after the first.
    """
    expected = DEVELOPMENT_SECRET_KEY.encode()
    found = False
    for key in parse_secret_keys(value):
        found |= hmac.compare_digest(key.encode(), expected)
    return found


def _fernet(key: str) -> Fernet:
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(key.encode())
    return Fernet(base64.urlsafe_b64encode(raw))


class SecretBox:
    """Encrypts and decrypts short secrets with keys derived from ``GRAVITY_SECRET_KEY``.

    ``secret_keys`` is the variable's value (one key, or several separated by commas) or a sequence of
    keys; the first key encrypts, every key decrypts.
    """

    def __init__(self, secret_keys: str | Sequence[str]) -> None:
        keys = parse_secret_keys(secret_keys) if isinstance(secret_keys, str) else list(secret_keys)
        if not keys:
            raise ValueError("GRAVITY_SECRET_KEY needs at least one key")
        if any(len(key) < MIN_KEY_LENGTH for key in keys):
            raise ValueError(
                f"GRAVITY_SECRET_KEY must be at least {MIN_KEY_LENGTH} characters"
                + (" per comma-separated key" if len(keys) > 1 else "")
            )
        if isinstance(secret_keys, str) and len(keys) > 1:
            keys.append(secret_keys)  # decrypt-only: a pre-rotation single key that contains commas
        self._fernet = MultiFernet([_fernet(key) for key in keys])

    def encrypt(self, plaintext: str) -> str:
        """Ciphertext (URL-safe text) of ``plaintext`` under the first key; a fresh IV every time."""
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        """The plaintext; raise :class:`DecryptionError` if no key opens it or the text is wrong."""
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken as exc:
            raise DecryptionError("secret could not be decrypted with GRAVITY_SECRET_KEY") from exc

    def rotate(self, ciphertext: str) -> str:
        """``ciphertext`` re-encrypted under the first key (the plaintext never leaves this call);
        raise :class:`DecryptionError` if no key opens it."""
        try:
            return self._fernet.rotate(ciphertext.encode()).decode()
        except InvalidToken as exc:
            raise DecryptionError("secret could not be decrypted with GRAVITY_SECRET_KEY") from exc
