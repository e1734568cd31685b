"""Secrets at rest and in transit between services: Fernet (AES-128-CBC + HMAC-SHA256, authenticated).

The key is derived from ``GRAVITY_SECRET_KEY`` with HKDF-SHA256, so any string of enough entropy works as
the variable's value and the same value gives the same key in the registry (which encrypts signing
secrets, client secrets, JWTs and tokens) and in fanout (which decrypts signing secrets to sign).
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["DEVELOPMENT_SECRET_KEY", "DecryptionError", "SecretBox"]

_INFO = b"gravity-sms secrets v1"

DEVELOPMENT_SECRET_KEY = "gravity-development-secret-key-do-not-use-in-production"  # noqa: S105
"""What registry and fanout use when ``GRAVITY_SECRET_KEY`` is unset in development (published, so
never secret); production refuses to start without a real key."""


class DecryptionError(ValueError):
    """The ciphertext was not made with this key, or was altered."""


class SecretBox:
    """Encrypts and decrypts short secrets with a key derived from ``GRAVITY_SECRET_KEY``."""

    def __init__(self, secret_key: str) -> None:
        if len(secret_key) < 16:
            raise ValueError("GRAVITY_SECRET_KEY must be at least 16 characters")
        raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret_key.encode())
        self._fernet = Fernet(base64.urlsafe_b64encode(raw))

    def encrypt(self, plaintext: str) -> str:
        """Ciphertext (URL-safe text) of ``plaintext``; a fresh IV every time."""
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        """The plaintext; raise :class:`DecryptionError` if the key or the text is wrong."""
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken as exc:
            raise DecryptionError("secret could not be decrypted with GRAVITY_SECRET_KEY") from exc
