"""One log setup for every service: text lines for people, or one JSON object per line for machines.

``GRAVITY_LOG_FORMAT=text`` (the default) writes ``<time> <LEVEL> <logger>: <message>`` and, after it, the
ids the line concerns (``tenantId=… messageId=…``). ``GRAVITY_LOG_FORMAT=json`` writes one JSON object per
line on stderr::

    {"ts": "2026-03-01T14:30:00.034Z", "level": "INFO", "service": "gravity-ingest",
     "logger": "gravity_ingest.routes", "message": "accepted notification",
     "tenantId": "tenant_…", "messageId": "msg_…", "traceId": "4bf92f35…"}

``tenantId``, ``messageId``, ``appId`` and ``rcMessageId`` appear wherever a line concerns them: pass
them with ``extra=ids(...)`` on one call, or set them for a block with :func:`log_context` (a
contextvar, so every line logged inside, by any module, carries them). ``traceId`` is added from the
current OpenTelemetry span when there is one (also in pass-through mode, from an incoming
``traceparent``). A traceback goes in ``exc_info`` as one string, still on one line.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any, Literal

from pythonjsonlogger.orjson import OrjsonFormatter

from gravity_events import tracing

__all__ = ["ID_FIELDS", "LogFormat", "configure", "ids", "log_context", "logging_json"]

LogFormat = Literal["text", "json"]

ID_FIELDS = ("tenantId", "messageId", "appId", "rcMessageId", "traceId")
"""The ids a line may carry, in the order the text format appends them."""

_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "gravity_log_context", default=None
)
_json = False


def ids(
    *,
    tenant_id: str | None = None,
    message_id: str | None = None,
    app_id: str | None = None,
    rc_message_id: str | None = None,
    trace_id: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """``extra=`` for a log call: the given ids under their contract names, and any other ``fields``
    (``status=200``, ``outcome="success"``) as they are. Ids that are None are left out. ``trace_id`` is
    for a line logged outside its trace's span (a batch's line about one of its records); otherwise the
    current span's is added."""
    named = {
        "tenantId": tenant_id,
        "messageId": message_id,
        "appId": app_id,
        "rcMessageId": rc_message_id,
        "traceId": trace_id,
    }
    return {**{k: v for k, v in named.items() if v is not None}, **fields}


@contextlib.contextmanager
def log_context(
    *,
    tenant_id: str | None = None,
    message_id: str | None = None,
    app_id: str | None = None,
    rc_message_id: str | None = None,
) -> Iterator[None]:
    """Every line logged within the block (in this task) carries these ids, on top of any set outside."""
    added = ids(tenant_id=tenant_id, message_id=message_id, app_id=app_id, rc_message_id=rc_message_id)
    token = _context.set({**(_context.get() or {}), **added})
    try:
        yield
    finally:
        _context.reset(token)


class _ContextFilter(logging.Filter):
    """Copies the block's ids and the current trace id onto each record (without overriding ``extra=``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in (_context.get() or {}).items():
            if not hasattr(record, name):
                setattr(record, name, value)
        if not hasattr(record, "traceId"):
            trace_id = tracing.current_trace_id()
            if trace_id is not None:
                record.traceId = trace_id
        return True


class _TextFormatter(logging.Formatter):
    """The development line, then ``name=value`` for each id the record carries."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        tail = " ".join(f"{name}={getattr(record, name)}" for name in ID_FIELDS if hasattr(record, name))
        return f"{line} {tail}" if tail else line


class _JsonFormatter(OrjsonFormatter):
    """``ts`` (ISO 8601 UTC, milliseconds, ``Z``), ``level``, ``service``, ``logger``, ``message``, then
    the record's extras (the ids among them)."""

    def __init__(self, service: str) -> None:
        super().__init__(
            "{levelname}{name}{message}",
            style="{",
            rename_fields={"levelname": "level", "name": "logger", "exc_info": "excInfo"},
            static_fields={"service": service},
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        seconds = time.gmtime(record.created)
        log_data["ts"] = time.strftime("%Y-%m-%dT%H:%M:%S", seconds) + f".{int(record.msecs):03d}Z"
        super().add_fields(log_data, record, message_dict)


def configure(level: str, *, log_format: LogFormat = "text", service: str = "gravity") -> None:
    """Send every log line to stderr at ``level`` in ``log_format``; aiokafka's INFO lines only at DEBUG.

    ``service`` is the JSON lines' ``service`` field (``gravity-ingest``). Replaces whatever handlers the
    root logger had, so calling it again (tests, a re-exec) does not double the lines.
    """
    global _json
    level = level.upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter())
    if log_format == "json":
        handler.setFormatter(_JsonFormatter(service))
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    _json = log_format == "json"
    logging.getLogger("aiokafka").setLevel(logging.WARNING if level != "DEBUG" else logging.DEBUG)


def logging_json() -> bool:
    """True once :func:`configure` set the JSON format (uvicorn must then log through the root logger)."""
    return _json
