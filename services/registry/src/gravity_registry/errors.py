"""The registry's errors, answered in the contract's body by :mod:`gravity_service.errors`.

GravityError
└── RegistryError
    ├── Unauthorized       401 unauthorized
    ├── NotFound           404 not_found
    ├── Conflict           409 conflict
    ├── ValidationFailed   422 validation_error
    └── UpstreamFailed     502 ringcentral_error (RingCentral refused or could not be reached)

The shared handlers also map request-shape errors from FastAPI to 422 ``validation_error``, unknown routes
to 404 and the unexpected to 500; :func:`install_error_handlers` adds losing PostgreSQL (refused, reset or
shut down) → 503 ``unavailable`` with ``Retry-After``.
"""

from __future__ import annotations

import logging

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import Response

from gravity_service import errors as service_errors
from gravity_service.errors import GravityError, error_body, json_response

__all__ = [
    "DATABASE_UNAVAILABLE",
    "Conflict",
    "NotFound",
    "RegistryError",
    "Unauthorized",
    "UpstreamFailed",
    "ValidationFailed",
    "error_body",
    "install_error_handlers",
    "json_response",
]

log = logging.getLogger(__name__)

DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError,  # refused, reset, timed out (TimeoutError is an OSError)
    asyncpg.PostgresConnectionError,  # e.g. the connection closed in the middle of an operation
    asyncpg.CannotConnectNowError,  # starting up or shutting down
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)
"""What losing PostgreSQL looks like to asyncpg: the request may succeed if retried, so 503, not 500."""


class RegistryError(GravityError):
    """Base of every error the registry answers with."""


class Unauthorized(RegistryError):
    """No bearer token, or not a valid one for this API."""

    code, status = "unauthorized", 401


class NotFound(RegistryError):
    """No such resource for this tenant (another tenant's ids answer this too, never 403)."""

    code, status = "not_found", 404


class Conflict(RegistryError):
    """The request conflicts with the resource's state."""

    code, status = "conflict", 409


class ValidationFailed(RegistryError):
    """A field breaks a rule; ``details`` names it."""

    code, status = "validation_error", 422


class UpstreamFailed(RegistryError):
    """RingCentral refused a call or could not be reached; ``details`` carries its answer."""

    code, status = "ringcentral_error", 502


def install_error_handlers(app: FastAPI) -> None:
    """The shared handlers, plus losing the database → 503 with ``Retry-After``."""
    service_errors.install_error_handlers(app)

    async def _unavailable(request: Request, exc: Exception) -> Response:
        log.warning("database unavailable on %s %s: %r", request.method, request.url.path, exc)
        body = error_body("unavailable", "the database cannot be reached; try again shortly")
        return json_response(body, 503, {"Retry-After": "1"})

    for exc_class in DATABASE_UNAVAILABLE:
        app.add_exception_handler(exc_class, _unavailable)
