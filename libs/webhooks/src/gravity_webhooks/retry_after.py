"""``Retry-After`` as a number of seconds a caller may wait, whatever the server sent.

RFC 9110 allows delay-seconds or an HTTP-date. A hostile or broken server can send anything: a huge number
(``1e12`` overflows a ``timedelta``), ``inf``, ``nan``, a negative number, a date years ahead. Every client
of the gateway reads the header through :func:`parse_retry_after`, so none of those can pin a retry or
overflow a schedule: negative, non-numeric and non-finite values other than ``inf`` are ignored (the
caller's own schedule applies), and everything else is clamped to ``RETRY_AFTER_MAX`` seconds.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = ["RETRY_AFTER_MAX", "parse_retry_after"]

RETRY_AFTER_MAX = 24 * 3600.0
"""The longest wait any ``Retry-After`` can ask for: one day."""


def parse_retry_after(
    value: str | None, *, now: datetime | None = None, maximum: float = RETRY_AFTER_MAX
) -> float | None:
    """Seconds to wait from ``value`` (delay-seconds or an HTTP-date), within ``[0, maximum]``; ``None``
    when the header is absent or says nothing usable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        return _until_date(text, now=now, maximum=maximum)
    if math.isnan(seconds) or seconds < 0:
        return None
    return min(seconds, maximum)


def _until_date(text: str, *, now: datetime | None, maximum: float) -> float | None:
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; an obsolete form without a zone is read as UTC
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), maximum)
