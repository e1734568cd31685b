"""Fanout's only HTTP surface: ``/healthz`` and ``/readyz`` (contract: port 8003).

Ready means every app is known (the apps change stream is replayed), the inbound consumer reads from
fixed positions, and no supervised task has died; until then, and while stopping, ``/readyz`` answers 503
with what is not ready (``gravity_service.health``).
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter

from gravity_service import OK, Supervisor, health_router

__all__ = ["Readiness", "make_router"]


@dataclass
class Readiness:
    """What the lifespan has reached; each field is a readiness check's answer (``"ok"`` when done)."""

    apps: str = "loading"
    consumers: str = "starting"

    def apps_loaded(self) -> None:
        """Every app on the change stream at start has been applied."""
        self.apps = OK

    def consumers_placed(self) -> None:
        """The consumers run and the inbound one reads from fixed positions."""
        self.consumers = OK

    def stopping(self) -> None:
        """Shutdown began: take this copy out of rotation first."""
        self.consumers = "stopping"


def make_router(readiness: Readiness, supervisor: Supervisor) -> APIRouter:
    """The health routes, reading ``readiness`` and ``supervisor`` on every probe."""
    return health_router(
        {"apps": lambda: readiness.apps, "consumers": lambda: readiness.consumers}, supervisor=supervisor
    )
