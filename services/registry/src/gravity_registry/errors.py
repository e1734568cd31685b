"""The registry's errors, mapped once to ``{"error": {"code", "message", "details"}}``.

RegistryError
├── Unauthorized       401 unauthorized
├── NotFound           404 not_found
├── Conflict           409 conflict
├── ValidationFailed   422 validation_error
└── UpstreamFailed     502 ringcentral_error (RingCentral refused or could not be reached)
(request-shape errors from FastAPI are mapped to 422 validation_error too; unknown routes to 404; losing
PostgreSQL — refused, reset or shut down — to 503 unavailable with Retry-After.)
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import asyncpg
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = [
    "Conflict",
    "NotFound",
    "RegistryError",
    "Unauthorized",
    "UpstreamFailed",
    "ValidationFailed",
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


class RegistryError(Exception):
    """Base of every error the registry answers with."""

    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500
    retriable: ClassVar[bool] = False

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


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


def json_response(data: Any, status: int = 200) -> Response:
    """A JSON response serialised with orjson."""
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves in the contract's shape; unexpected ones are logged and answered 500."""

    @app.exception_handler(RegistryError)
    async def _registry(request: Request, exc: RegistryError) -> Response:
        return json_response(_body(exc.code, exc.message, exc.details), exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        details = [
            {"field": ".".join(str(p) for p in e["loc"] if p != "body"), "message": e["msg"]}
            for e in exc.errors()
        ]
        return json_response(_body("validation_error", "the request is not valid", details), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return json_response(_body(code, str(exc.detail)), exc.status_code)

    async def _unavailable(request: Request, exc: Exception) -> Response:
        log.warning("database unavailable on %s %s: %r", request.method, request.url.path, exc)
        body = _body("unavailable", "the database cannot be reached; try again shortly")
        response = json_response(body, 503)
        response.headers["Retry-After"] = "1"
        return response

    for exc_class in DATABASE_UNAVAILABLE:
        app.add_exception_handler(exc_class, _unavailable)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return json_response(_body("internal_error", "an unexpected error occurred"), 500)
