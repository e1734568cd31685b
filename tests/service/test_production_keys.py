"""Production refuses the published development secret key, alone or among rotated keys, in every service
that reads it, and says so without printing the key."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gravity_fanout.settings import Settings as FanoutSettings
from gravity_registry.settings import Settings as RegistrySettings
from gravity_webhooks import DEVELOPMENT_SECRET_KEY

STRONG = "s" * 48
REGISTRY = {
    "GRAVITY_ENV": "production",
    "DATABASE_URL": "postgresql://db/gravity",
    "GRAVITY_ADMIN_TOKEN": "a" * 32,
}


@pytest.mark.parametrize("value", [DEVELOPMENT_SECRET_KEY, f"{STRONG},{DEVELOPMENT_SECRET_KEY}"])
@pytest.mark.parametrize(
    "make",
    [
        lambda key: FanoutSettings(GRAVITY_ENV="production", GRAVITY_SECRET_KEY=key),
        lambda key: RegistrySettings(**REGISTRY, GRAVITY_SECRET_KEY=key),
    ],
)
def test_the_development_key_is_refused_in_production(make, value: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError, match="development GRAVITY_SECRET_KEY") as refused:
        make(value)
    assert DEVELOPMENT_SECRET_KEY not in str(refused.value)


def test_rotated_strong_keys_are_accepted_and_a_short_one_is_not() -> None:
    assert RegistrySettings(**REGISTRY, GRAVITY_SECRET_KEY=f"{STRONG},{'t' * 40}").production
    with pytest.raises(ValidationError, match="each key 32"):
        RegistrySettings(**REGISTRY, GRAVITY_SECRET_KEY=f"{STRONG},short-key-of-20-chars")
