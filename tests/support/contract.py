"""Checks of shapes the contract fixes: the error body every service answers with, the sms_inbound fields."""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["SMS_INBOUND_FIELDS", "assert_error"]

SMS_INBOUND_FIELDS = ("type", "messageId", "from", "to", "body", "rcMessageId", "tenantId", "timestamp")
"""The fields of an ``sms_inbound`` event, in the order they are serialised."""


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Check that ``response`` is the contract's error with this status and code; return its body.

    The body is ``{"error": {"code", "message", "details"}}`` as JSON: nothing beside ``error``, a
    non-empty message, and ``details`` only when there is something to say.
    """
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert {"code", "message"} <= set(error) <= {"code", "message", "details"}, body
    assert error["code"] == code, body
    assert isinstance(error["message"], str) and error["message"], body
    return body
