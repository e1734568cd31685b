"""The log filter realtime installs keeps credentials out of every line, in each form uvicorn and the
WebSocket library log them."""

from __future__ import annotations

import logging

import pytest

from gravity_realtime.redact import RedactTokens

KEY = "gsk_3q2-7wX9yZbQe1vUo0cJpL4mKfN8sDhA6tRgYiEwBnM"


@pytest.mark.parametrize(
    ("msg", "args"),
    [
        ("< %s: %s", ("authorization", f"Bearer {KEY}")),  # the WebSocket library's debug header lines
        ("< %s: %s", ("Cookie", f"session={KEY}")),
        ("< %s: %s", ("sec-websocket-protocol", KEY)),
        ("%s - %s", ("127.0.0.1", f"GET /v1/ws?token={KEY} HTTP/1.1")),
        (f"authorization: Bearer {KEY}", ()),
        ("%s", (f"Basic {KEY}",)),
    ],
)
def test_no_credential_survives_the_filter(msg: str, args: tuple[str, ...]) -> None:
    record = logging.LogRecord("uvicorn.error", logging.DEBUG, __file__, 1, msg, args, None)
    assert RedactTokens().filter(record) is True, "a record is never dropped"
    line = record.getMessage()
    assert KEY not in line, line
    assert "[redacted]" in line


def test_other_lines_keep_their_arguments() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, "%s %s %d", ("GET", "/v1/ws", 101), None
    )
    RedactTokens().filter(record)
    assert record.getMessage() == "GET /v1/ws 101"
