"""Ingest's errors, mapped once to the contract's error body.

IngestError
├── PayloadTooLarge      413 payload_too_large
├── InvalidNotification  400 invalid_notification
├── Unauthorized         401 unauthorized
├── BrokerUnavailable    503 broker_unavailable (retriable: RingCentral redelivers)
└── NotReady             503 not_ready (retriable: the subscription stream is still being replayed)

Anything unexpected on the webhook is logged and answered 500 ``internal_error`` in the same shape.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = [
    "BrokerUnavailable",
    "IngestError",
    "InvalidNotification",
    "NotReady",
    "PayloadTooLarge",
    "Unauthorized",
    "error_body",
    "install_error_handlers",
    "json_response",
]


class IngestError(Exception):
    """Base of every error ingest answers with; ``code`` and ``status`` per the contract."""

    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500
    retriable: ClassVar[bool] = False

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class PayloadTooLarge(IngestError):
    """The body is larger than the limit (1 MiB by default)."""

    code, status = "payload_too_large", 413


class InvalidNotification(IngestError):
    """Malformed JSON, or JSON that is not a RingCentral notification / usable SMS."""

    code, status = "invalid_notification", 400


class Unauthorized(IngestError):
    """Missing or wrong Verification-Token, or an unknown or removed subscription."""

    code, status = "unauthorized", 401


class BrokerUnavailable(IngestError):
    """The broker did not acknowledge the append in time."""

    code, status, retriable = "broker_unavailable", 503, True


class NotReady(IngestError):
    """Ingest has not finished replaying the subscription stream, so it cannot verify tokens yet."""

    code, status, retriable = "not_ready", 503, True


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """``{"error": {"code", "message", "details"?}}``."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


def json_response(data: Any, status: int = 200) -> Response:
    """A JSON response serialised with orjson."""
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def install_error_handlers(app: FastAPI) -> None:
    """Map every error to the contract's shape, in one place."""

    @app.exception_handler(IngestError)
    async def _ingest_error(request: Request, exc: IngestError) -> Response:
        return json_response(error_body(exc.code, exc.message, exc.details), exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        details = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        return json_response(error_body("validation_error", "invalid request", details), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return json_response(error_body(code, str(exc.detail)), exc.status_code)
