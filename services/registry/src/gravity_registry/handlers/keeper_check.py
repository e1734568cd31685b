"""What one keeper check carries while it runs: how far it got, and the two ways it ends early."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gravity_registry.ringcentral import RingCentralError, Subscription, Tokens

__all__ = ["NotCallable", "Progress", "Superseded"]


class NotCallable(RingCentralError):
    """The stored ``serverUrl`` is not one this gateway calls (any more)."""


class Superseded(Exception):
    """The connection was replaced or removed while the check ran; its outcome is dropped."""


@dataclass
class Progress:
    """How far a check got: what is stored, what it obtained, and whether a backfill is still owed."""

    subscription_id: str
    expires_at: datetime
    backfill: bool
    status: str = "renewing"
    access: str = ""
    """The access token the check uses."""
    tokens: Tokens | None = None
    tokens_saved: bool = False
    created: tuple[Subscription, str] | None = None
    """A subscription this check created and has not stored yet (with its verification token)."""
    recreated: bool = False
    renewed: bool = False

    def outcome(self) -> str:
        """What a successful check did, for the checks counter."""
        if self.recreated:
            return "recreated"
        if self.renewed:
            return "renewed"
        return "token_refreshed" if self.tokens is not None else "ok"
