"""Shapes every route shares: request and response bases, timestamps, and the contract's error body.

Routes answer with :func:`gravity_registry.errors.json_response` (orjson bytes). Response models (``Out``
subclasses, here and in each domain's module) describe those bytes in /openapi.json; they are not used to
serialise, so what goes on the wire is exactly what the handlers build.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

__all__ = ["ErrorBody", "ErrorObject", "In", "Out", "Timestamp", "errors"]

Timestamp = Annotated[
    datetime,
    Field(description="ISO 8601 UTC with milliseconds and Z", examples=["2026-03-01T14:30:00.000Z"]),
]


class In(BaseModel):
    """A request body: unknown fields refused, surrounding whitespace stripped from strings, and no string
    with a NUL character (PostgreSQL text cannot hold one: refused here as a 422 naming the field)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*")
    @classmethod
    def _storable(cls, value: object) -> object:
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("must not contain the NUL character (U+0000)")
        return value


class Out(BaseModel):
    """A response object: snake_case attributes, the contract's camelCase names on the wire."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class ErrorObject(BaseModel):
    """The ``error`` member of every error body."""

    code: str = Field(description="snake_case error code", examples=["not_found"])
    message: str = Field(description="a human sentence", examples=["no such app"])
    details: Any = Field(None, description="what exactly failed, when there is more to say")


class ErrorBody(BaseModel):
    """Every error: ``{"error": {"code", "message", "details"}}`` (``details`` optional)."""

    error: ErrorObject


_ERRORS: dict[int, tuple[str, str, str, Any]] = {
    400: ("http_error", "The body could not be parsed as JSON.", "There was an error parsing the body", None),
    401: (
        "unauthorized",
        "No valid bearer token: the tenant's API key, or the admin token on admin routes.",
        "a valid API key is required: Authorization: Bearer <apiKey>",
        None,
    ),
    404: (
        "not_found",
        "Not found for this caller (another tenant's ids answer this too).",
        "not found",
        None,
    ),
    409: ("conflict", "The request conflicts with the resource's state.", "conflict", None),
    413: (
        "payload_too_large",
        "The request body is larger than GRAVITY_REGISTRY_MAX_BODY_BYTES (64 KiB by default).",
        "the request body is larger than 65536 bytes",
        {"limit": 65536},
    ),
    422: (
        "validation_error",
        "A field breaks a rule; details names the offending field(s).",
        "the request is not valid",
        [{"field": "name", "message": "Field required"}],
    ),
    429: (
        "rate_limited",
        "Too many of these requests for this tenant; retry after the Retry-After header's seconds.",
        "too many test-webhook requests for this tenant; retry in 6 s",
        {"retryAfterSeconds": 6},
    ),
    502: (
        "ringcentral_error",
        "RingCentral refused the call or could not be reached; details carries its answer.",
        "RingCentral refused the connection: invalid_grant",
        {"ringcentralStatus": 400, "ringcentralError": {"error": "invalid_grant"}},
    ),
    503: (
        "unavailable",
        "The database cannot be reached (Retry-After: 1); try again shortly.",
        "the database cannot be reached; try again shortly",
        None,
    ),
}


def errors(*statuses: int, **messages: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for these error statuses, each with the error body's schema and an example.

    ``messages`` replaces an example's message by code, e.g. ``not_found="no such app"``.
    """
    documented: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        code, description, message, details = _ERRORS[status]
        error: dict[str, Any] = {"code": code, "message": messages.get(code, message)}
        if details is not None:
            error["details"] = details
        documented[status] = {
            "model": ErrorBody,
            "description": description,
            "content": {"application/json": {"example": {"error": error}}},
        }
    return documented
