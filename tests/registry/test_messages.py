"""The messages API over what the projection stored: filters, limits, tenant isolation and paging."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.registry.conftest import (
    Registry,
    feed,
    feed_in_order,
    raw,
    stored,
)
from tests.support import assert_error

from gravity_events import ids
from gravity_events.settings import KafkaSettings


async def test_filters_limits_and_isolation(registry: Registry, kafka_settings: KafkaSettings) -> None:
    a, b = await registry.tenant("A"), await registry.tenant("B")
    base = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    events = [
        raw(
            a["tenantId"],
            received_at=base + timedelta(seconds=i),
            **({"from": {"phoneNumber": "+1999"}} if i == 2 else {}),
        )
        for i in range(4)
    ]
    b_event = raw(b["tenantId"])
    await feed_in_order(registry, kafka_settings, a, *events)
    await feed(kafka_settings, b_event)
    msgs = await stored(registry, a, 4)
    assert [m["rcMessageId"] for m in msgs] == [e.rc_message_id for e in reversed(events)]
    c = registry.client
    r = await c.get("/v1/sms/messages", params={"from": "+1999"}, headers=a["auth"])
    assert [m["rcMessageId"] for m in r.json()["messages"]] == [events[2].rc_message_id]
    r = await c.get("/v1/sms/messages", params={"to": "+15551234567", "limit": 100}, headers=a["auth"])
    assert len(r.json()["messages"]) == 4
    since, until = (
        ids.format_timestamp(base + timedelta(seconds=1)),
        ids.format_timestamp(base + timedelta(seconds=3)),
    )
    r = await c.get("/v1/sms/messages", params={"since": since, "until": until}, headers=a["auth"])
    assert [m["rcMessageId"] for m in r.json()["messages"]] == [
        events[2].rc_message_id,
        events[1].rc_message_id,
    ]
    assert (await c.get("/v1/sms/messages", params={"direction": "outbound"}, headers=a["auth"])).json() == {
        "messages": [],
        "nextCursor": None,
    }
    for params in (
        {"limit": 0},
        {"limit": 101},
        {"direction": "sideways"},
        {"cursor": "!!"},
        {"since": "yesterday"},
    ):
        r = await c.get("/v1/sms/messages", params=params, headers=a["auth"])
        assert r.status_code == 422, params
        assert_error(r, 422, "validation_error")
    # the other tenant's message: 404, never the data
    b_id = ids.message_id_for(b["tenantId"], b_event.rc_message_id)
    await stored(registry, b, 1)
    r = await c.get(f"/v1/sms/messages/{b_id}", headers=a["auth"])
    assert_error(r, 404, "not_found")
    assert b_event.rc_message_id not in r.text
    r = await c.get("/v1/sms/messages", params={"after": b_id}, headers=a["auth"])
    assert r.status_code == 404


async def test_paging_while_messages_arrive_returns_each_once(
    registry: Registry, kafka_settings: KafkaSettings
) -> None:
    tenant = await registry.tenant()
    first = [raw(tenant["tenantId"]) for _ in range(25)]
    await feed(kafka_settings, *first)
    await stored(registry, tenant, 25)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 7}
        if cursor:
            params["cursor"] = cursor
        page = (await registry.client.get("/v1/sms/messages", params=params, headers=tenant["auth"])).json()
        seen += [m["messageId"] for m in page["messages"]]
        pages += 1
        if pages == 1:  # new messages arrive while the client pages
            await feed(kafka_settings, *(raw(tenant["tenantId"]) for _ in range(10)))
            await stored(registry, tenant, 35)
        cursor = page["nextCursor"]
        if cursor is None:
            break
    expected = {ids.message_id_for(tenant["tenantId"], e.rc_message_id) for e in first}
    assert len(seen) == len(set(seen)) and expected <= set(seen)


async def test_after_pages_oldest_first(registry: Registry, kafka_settings: KafkaSettings) -> None:
    tenant = await registry.tenant()
    base = datetime(2026, 6, 1, tzinfo=UTC)
    events = [raw(tenant["tenantId"], received_at=base + timedelta(seconds=i)) for i in range(6)]
    await feed_in_order(registry, kafka_settings, tenant, *events)
    mids = [ids.message_id_for(tenant["tenantId"], e.rc_message_id) for e in events]
    got: list[str] = []
    cursor = None
    while True:
        params = {"after": mids[1], "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await registry.client.get("/v1/sms/messages", params=params, headers=tenant["auth"])).json()
        got += [m["messageId"] for m in page["messages"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert got == mids[2:]
