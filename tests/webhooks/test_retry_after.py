"""``Retry-After``: every value a server can send becomes a bounded wait, or none."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from tests.support import running_receiver

from gravity_webhooks import RETRY_AFTER_MAX, DeliveryClient, parse_retry_after

NOW = datetime(2026, 3, 1, 14, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("7", 7.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("1e12", RETRY_AFTER_MAX),
        ("99999999999999999999999999", RETRY_AFTER_MAX),
        ("inf", RETRY_AFTER_MAX),
        ("-inf", None),
        ("nan", None),
        ("-5", None),
        ("soon", None),
        (format_datetime(NOW + timedelta(seconds=90), usegmt=True), 90.0),
        (format_datetime(NOW - timedelta(days=3), usegmt=True), 0.0),
        (format_datetime(NOW + timedelta(days=3650), usegmt=True), RETRY_AFTER_MAX),
        ("Fri, 31 Dec 9999 23:59:59 GMT", RETRY_AFTER_MAX),
        ("Mon, 32 Foo 2026 99:99:99 GMT", None),
    ],
)
def test_every_value_is_bounded_or_ignored(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


@pytest.mark.parametrize("value", ["1e12", "inf", "nan", "-1", "Fri, 31 Dec 9999 23:59:59 GMT"])
async def test_the_delivery_client_reports_a_hostile_retry_after_bounded(value: str) -> None:
    client = DeliveryClient(production=False, user_agent="t", timeout=2)
    try:
        async with running_receiver() as receiver:
            receiver.behave("/busy", status=429, headers={"retry-after": value})
            result = await client.deliver(
                receiver.url("/busy"), b"{}", message_id="m", secrets=["whsec_" + "A" * 32]
            )
    finally:
        await client.aclose()
    assert result.status == 429 and not result.ok
    assert result.retry_after is None or 0 <= result.retry_after <= RETRY_AFTER_MAX
