"""The contract's error body, one base error class, and the handlers that map errors to it once.

Every error leaves a service as ``{"error": {"code": "<snake_case>", "message": "<sentence>",
"details": ...}}`` (``details`` only when there are some), serialised with orjson.

GravityError                    ``status`` / ``code`` / ``retriable`` as class attributes
└── <Service>Error              one base per service package (IngestError, RegistryError, ...)
    └── Unauthorized, NotFound, ...   401 unauthorized, 404 not_found, ... (see each service)

Mapped by :func:`install_error_handlers` besides the tree:

- ``RequestValidationError`` (FastAPI, a request that does not fit its model) → 422
  ``validation_error``, ``details`` a list of ``{"field": "webhookUrl", "message": "..."}`` (the
  location without its leading ``body``; query and path fields keep theirs: ``query.limit``);
- Starlette's ``HTTPException`` → its status: 404 ``not_found``, 405 ``method_not_allowed`` (with its
  ``Allow`` header), anything else ``http_error``;
- any other exception → logged with its traceback and answered 500 ``internal_error``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = [
    "GravityError",
    "error_body",
    "install_error_handlers",
    "json_response",
    "validation_details",
]

log = logging.getLogger(__name__)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


class GravityError(Exception):
    """Base of every error a service answers with on purpose.

    Subclasses set ``status`` (the HTTP status), ``code`` (the body's snake_case code) and
    ``retriable`` (the same request may succeed later, e.g. a broker or database outage).
    ``message`` is a human sentence; ``details`` any JSON value that helps the caller.
    """

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    retriable: ClassVar[bool] = False

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        """This error as the contract's body."""
        return error_body(self.code, self.message, self.details)


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """``{"error": {"code", "message", "details"?}}``; ``details`` is left out when None."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON response serialised with orjson."""
    return Response(orjson.dumps(data), status_code=status, media_type="application/json", headers=headers)


def validation_details(exc: RequestValidationError) -> list[dict[str, str]]:
    """``[{"field", "message"}]`` for each problem FastAPI found, ``field`` dotted and without ``body``."""
    return [
        {"field": ".".join(str(p) for p in e["loc"] if p != "body"), "message": e["msg"]}
        for e in exc.errors()
    ]


def install_error_handlers(app: FastAPI) -> None:
    """Map :class:`GravityError`, request validation, routing errors and the unexpected to the body.

    A service adds handlers of its own afterwards for its third-party outages (e.g. the registry's
    lost database → 503); FastAPI picks the most specific class, so the order does not matter.
    """

    @app.exception_handler(GravityError)
    async def _gravity(request: Request, exc: GravityError) -> Response:
        return json_response(exc.body(), exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        body = error_body("validation_error", "the request is not valid", validation_details(exc))
        return json_response(body, 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return json_response(error_body(code, str(exc.detail)), exc.status_code, exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return json_response(error_body("internal_error", "an unexpected error occurred"), 500)
