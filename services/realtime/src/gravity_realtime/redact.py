"""Keep API keys out of the logs: WebSocket clients in browsers send theirs as ``?token=``.

uvicorn logs the path with its query string for every WebSocket upgrade (``uvicorn.error``) and every
HTTP request (``uvicorn.access``), and at debug level the WebSocket library it drives logs every request
header (``< authorization: Bearer …``). A filter on those loggers rewrites each ``token=`` value to
``token=[redacted]``, each ``Bearer``/``Basic`` credential to ``[redacted]``, and the value of a logged
``authorization``, ``cookie`` or ``sec-websocket-protocol`` header pair, before any handler formats the
line; the record's arguments keep their shape, so uvicorn's access formatter still finds its five fields.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["LOGGERS", "RedactTokens", "install_token_redaction", "redact"]

LOGGERS = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "uvicorn.asgi",
    "gravity_realtime.ws",
    "gravity_realtime.keys",
    "gravity_realtime.hub",
    "websockets",
    "websockets.server",
)
"""A logger's filters see only the records logged on it, not those of its children, hence each name."""

_TOKEN = re.compile(r"(token=)[^&\s\"'#]+", re.IGNORECASE)
_CREDENTIAL = re.compile(r"\b(bearer|basic)\s+[^\s\"',]+", re.IGNORECASE)
_SECRET_HEADERS = frozenset({"authorization", "cookie", "sec-websocket-protocol", "proxy-authorization"})


def redact(text: str) -> str:
    """``text`` with every ``token=<value>`` replaced by ``token=[redacted]`` and every ``Bearer`` or
    ``Basic`` credential by ``[redacted]``."""
    return _CREDENTIAL.sub(r"\1 [redacted]", _TOKEN.sub(r"\1[redacted]", text))


def _redact_arg(arg: Any) -> Any:
    if isinstance(arg, str):
        return redact(arg)
    if arg is None or isinstance(arg, int | float):
        return arg
    text = str(arg)  # a scope, an exception, a URL object: redacted as its text if it holds a secret
    return redact(text) if redact(text) != text else arg


class RedactTokens(logging.Filter):
    """Redacts ``token=`` values in a record's message and arguments; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            args = record.args
            if len(args) == 2 and isinstance(args[0], str) and args[0].strip().lower() in _SECRET_HEADERS:
                args = (args[0], "[redacted]")  # a header logged as ("< %s: %s", name, value)
            record.args = tuple(_redact_arg(a) for a in args)
        elif isinstance(record.args, Mapping):
            record.args = {k: _redact_arg(v) for k, v in record.args.items()}
        return True


def install_token_redaction() -> None:
    """Put one :class:`RedactTokens` on each of :data:`LOGGERS` (again is a no-op; uvicorn's logging
    configuration replaces handlers, not filters)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
