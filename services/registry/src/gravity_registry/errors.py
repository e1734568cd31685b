"""The registry's errors, answered in the contract's body by :mod:`gravity_service.errors`.

GravityError
└── RegistryError
    ├── Unauthorized       401 unauthorized
    ├── NotFound           404 not_found
    ├── Conflict           409 conflict
    ├── PayloadTooLarge    413 payload_too_large (answered by :mod:`gravity_registry.limits`)
    ├── ValidationFailed   422 validation_error
    ├── RateLimited        429 rate_limited, with ``Retry-After``
    └── UpstreamFailed     502 ringcentral_error (RingCentral refused or could not be reached)

The shared handlers also map request-shape errors from FastAPI to 422 ``validation_error``, unknown routes
to 404 and the unexpected to 500; :func:`install_error_handlers` adds losing PostgreSQL (refused, reset or
shut down) → 503 ``unavailable`` with ``Retry-After``, and a value PostgreSQL text cannot hold (a NUL
character, or one the database's encoding lacks) → 422 ``validation_error`` rather than a 500.
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
    "UNSTORABLE_TEXT",
    "Conflict",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
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

UNSTORABLE_TEXT: tuple[type[Exception], ...] = (
    asyncpg.CharacterNotInRepertoireError,  # 22021, e.g. a NUL character in a text parameter
    asyncpg.UntranslatableCharacterError,  # 22P05, a character the database's encoding cannot hold
)
"""PostgreSQL refusing a value the caller sent: the caller's fault, so 422, not 500."""


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


class PayloadTooLarge(RegistryError):
    """The request body is larger than ``GRAVITY_REGISTRY_MAX_BODY_BYTES``; ``details.limit`` says how large
    it may be."""

    code, status = "payload_too_large", 413


class RateLimited(RegistryError):
    """The tenant called a rate-limited route faster than it may; retry after ``retry_after`` seconds."""

    code, status = "rate_limited", 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, {"retryAfterSeconds": retry_after})
        self.retry_after = retry_after


class ValidationFailed(RegistryError):
    """A field breaks a rule; ``details`` names it."""

    code, status = "validation_error", 422


class UpstreamFailed(RegistryError):
    """RingCentral refused a call or could not be reached; ``details`` carries its answer."""

    code, status = "ringcentral_error", 502


def install_error_handlers(app: FastAPI) -> None:
    """The shared handlers, plus losing the database → 503 with ``Retry-After``, rate limits → 429 with
    ``Retry-After``, and text PostgreSQL refuses → 422."""
    service_errors.install_error_handlers(app)

    async def _rate_limited(request: Request, exc: Exception) -> Response:
        retry_after = exc.retry_after if isinstance(exc, RateLimited) else 1
        body = exc.body() if isinstance(exc, RateLimited) else error_body("rate_limited", str(exc))
        return json_response(body, 429, {"Retry-After": str(retry_after)})

    async def _unstorable(request: Request, exc: Exception) -> Response:
        log.info("refused unstorable text on %s %s: %s", request.method, request.url.path, exc)
        body = error_body(
            "validation_error",
            "a value contains a character that cannot be stored (such as NUL, U+0000)",
            [{"field": "request", "message": str(exc)[:200]}],
        )
        return json_response(body, 422)

    app.add_exception_handler(RateLimited, _rate_limited)
    for exc_class in UNSTORABLE_TEXT:
        app.add_exception_handler(exc_class, _unstorable)

    async def _unavailable(request: Request, exc: Exception) -> Response:
        log.warning("database unavailable on %s %s: %r", request.method, request.url.path, exc)
        body = error_body("unavailable", "the database cannot be reached; try again shortly")
        return json_response(body, 503, {"Retry-After": "1"})

    for exc_class in DATABASE_UNAVAILABLE:
        app.add_exception_handler(exc_class, _unavailable)
