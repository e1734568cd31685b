"""``GET /healthz`` (the process is up) and ``GET /readyz`` (it can do its job), as one router.

``/healthz`` always answers 200 ``{"status":"ok"}``. ``/readyz`` runs the service's named checks; each
answers ``"ok"`` or a word for what it is still doing (``"replaying"``, ``"unreachable"``). When all are
ok and no supervised task has failed it answers 200 ``{"status":"ok"}`` (plus the service's ``extra``
fields); otherwise 503 ``{"status":"unavailable","checks":{...}}`` with every check's answer and, for
each failed task of the :class:`~gravity_service.tasks.Supervisor`, its name and what happened.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from gravity_service.errors import json_response
from gravity_service.tasks import Supervisor

__all__ = ["OK", "Check", "health_router"]

OK = "ok"
"""What a passing check answers."""

Check = Callable[[], str | Awaitable[str]]
"""A readiness check: ``"ok"``, or what is not ready yet. May be async (e.g. a database ping); it should
bound its own wait, since a probe that hangs is worse than one that says 503."""

_OK_BODY = b'{"status":"ok"}'


def health_router(
    checks: Mapping[str, Check] | None = None,
    *,
    supervisor: Supervisor | None = None,
    extra: Callable[[], Mapping[str, Any]] | None = None,
) -> APIRouter:
    """The two routes, reading ``checks`` and ``supervisor`` on every probe.

    ``extra`` adds fields to a ready answer (realtime reports its open connections). The routes are
    left out of the OpenAPI schema: they are for orchestrators, not API users.
    """
    named = dict(checks or {})
    router = APIRouter()

    @router.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        """The process is up."""
        return Response(_OK_BODY, media_type="application/json")

    @router.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        """200 when every check passes and no supervised task failed, else 503 with what is not."""
        results: dict[str, str] = {}
        for name, check in named.items():
            result = check()
            results[name] = result if isinstance(result, str) else await result
        if supervisor is not None:
            results.update(supervisor.failures)
        if all(value == OK for value in results.values()):
            return json_response({"status": OK, **(extra() if extra is not None else {})})
        return json_response({"status": "unavailable", "checks": results}, 503)

    return router
