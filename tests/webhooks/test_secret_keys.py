"""GRAVITY_SECRET_KEY rotation (first key encrypts, every key decrypts) and the development-key check."""

from __future__ import annotations

import pytest

from gravity_webhooks import (
    DEVELOPMENT_SECRET_KEY,
    DecryptionError,
    SecretBox,
    is_development_key,
    new_signing_secret,
    parse_secret_keys,
)

OLD, NEW = "old-key-0123456789abcdefghijklmnop", "new-key-0123456789abcdefghijklmnop"

PRE_ROTATION_KEY = "pre-rotation-key-0123456789abcdef"
PRE_ROTATION_PLAINTEXT = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
PRE_ROTATION_CIPHERTEXT = (
    "gAAAAABrD7n0UzOTbVsEYWZoq250HOXsOVQW543icGF34wtKPvytu25OthGR1eU0wVj6GADsNOm6yMxtjBSwpcBK_Le0a3YRwk7"
    "iyZC_vub7J-lHHU6ZU5UaDJwiw0g8jiulr3iXyugV"
)
"""Made by the single-key SecretBox before rotation existed: what the database holds today."""


def test_a_pre_rotation_ciphertext_still_decrypts_alone_and_as_an_old_key() -> None:
    assert SecretBox(PRE_ROTATION_KEY).decrypt(PRE_ROTATION_CIPHERTEXT) == PRE_ROTATION_PLAINTEXT
    rotated = SecretBox(f"{NEW},{PRE_ROTATION_KEY}")
    assert rotated.decrypt(PRE_ROTATION_CIPHERTEXT) == PRE_ROTATION_PLAINTEXT


@pytest.mark.parametrize("keys", [f"{NEW},{OLD}", f" {NEW} , {OLD} ", [NEW, OLD]])
def test_the_first_key_encrypts_and_every_key_decrypts(keys: str | list[str]) -> None:
    box = SecretBox(keys)
    secret = new_signing_secret()
    from_old = SecretBox(OLD).encrypt(secret)
    assert box.decrypt(from_old) == secret
    made = box.encrypt(secret)
    assert SecretBox(NEW).decrypt(made) == secret
    with pytest.raises(DecryptionError):
        SecretBox(OLD).decrypt(made)


def test_rotate_re_encrypts_under_the_first_key() -> None:
    secret = new_signing_secret()
    from_old = SecretBox(OLD).encrypt(secret)
    rotated = SecretBox(f"{NEW},{OLD}").rotate(from_old)
    assert rotated != from_old and secret not in rotated
    assert SecretBox(NEW).decrypt(rotated) == secret
    with pytest.raises(DecryptionError):
        SecretBox(OLD).decrypt(rotated)
    with pytest.raises(DecryptionError):
        SecretBox(NEW).rotate(SecretBox("another-key-0123456789").encrypt(secret))
    with pytest.raises(DecryptionError):
        SecretBox(NEW).rotate("not a token")


def test_a_single_key_that_contains_a_comma_still_opens_what_it_encrypted() -> None:
    legacy = "first-half-0123456,second-half-0123456"
    made = SecretBox([legacy]).encrypt("s")  # the whole value as one key, as before rotation
    assert SecretBox(legacy).decrypt(made) == "s"


@pytest.mark.parametrize(
    ("keys", "match"),
    [
        ("short", "at least 16 characters$"),
        (f"{NEW},short", "per comma-separated key"),
        (f"{NEW},", "per comma-separated key"),
        (f"{NEW},,{OLD}", "per comma-separated key"),
        ([], "at least one key"),
    ],
)
def test_weak_key_lists_are_refused(keys: str | list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SecretBox(keys)


def test_parse_secret_keys_splits_on_commas_and_trims() -> None:
    assert parse_secret_keys(f" {NEW} ,{OLD}") == [NEW, OLD]
    assert parse_secret_keys(NEW) == [NEW]


@pytest.mark.parametrize(
    ("value", "development"),
    [
        (DEVELOPMENT_SECRET_KEY, True),
        (f" {DEVELOPMENT_SECRET_KEY} ", True),
        (f"{NEW},{DEVELOPMENT_SECRET_KEY}", True),
        (f"{DEVELOPMENT_SECRET_KEY},{OLD}", True),
        (NEW, False),
        (f"{NEW},{OLD}", False),
        (DEVELOPMENT_SECRET_KEY + "x", False),
        (DEVELOPMENT_SECRET_KEY[:-1], False),
        ("", False),
    ],
)
def test_is_development_key(value: str, development: bool) -> None:
    assert is_development_key(value) is development
