"""The delivery log: attempts reported by fanout on the deliveries topic, the deliveries API, the disable
decision, and manual retry requests published for fanout."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.registry.conftest import Registry
from tests.support import assert_error, eventually, keyed_events, notification, publish_events

from gravity_events import ids, topics
from gravity_events.models import (
    AppEndpointDisabled,
    AppUpserted,
    DeliveryAttempt,
    DeliveryRequested,
    RcNotification,
)
from gravity_events.settings import KafkaSettings


async def _app(registry: Registry, tenant: dict[str, Any], url: str | None = "http://127.0.0.1:9/h") -> str:
    r = await registry.client.post("/v1/apps", json={"name": "a", "webhookUrl": url}, headers=tenant["auth"])
    return str(r.json()["appId"])


def _attempt(tenant_id: str, app_id: str, message_id: str, n: int, ok: bool, minute: int) -> DeliveryAttempt:
    at = ids.parse_timestamp("2026-03-01T14:00:00.000Z") + timedelta(minutes=minute)
    return DeliveryAttempt(
        app_id=app_id,
        tenant_id=tenant_id,
        message_id=message_id,
        attempt=n,
        succeeded=ok,
        response_code=200 if ok else 500,
        duration_ms=12.5,
        error=None if ok else "HTTP 500",
        attempted_at=at,
        next_attempt_at=None if ok else at + timedelta(seconds=5),
    )


async def test_attempts_are_listed_filtered_and_paged(
    registry: Registry, kafka_settings: KafkaSettings
) -> None:
    c, tenant, other = registry.client, await registry.tenant(), await registry.tenant("other")
    app_id = await _app(registry, tenant)
    t = tenant["tenantId"]
    attempts = [
        _attempt(t, app_id, "msg_aaaaaaaaaaaa", 1, False, 0),
        _attempt(t, app_id, "msg_aaaaaaaaaaaa", 2, True, 1),
        _attempt(t, app_id, "msg_bbbbbbbbbbbb", 1, True, 2),
    ]
    # delivered twice (a replay after a crash): stored once
    await publish_events(kafka_settings, topics.DELIVERIES, *((app_id, a) for a in attempts + attempts))
    path = f"/v1/apps/{app_id}/deliveries"

    async def all_three() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = (await c.get(path, headers=tenant["auth"])).json()["deliveries"]
        return found if len(found) >= 3 else []

    listed = await eventually(all_three, timeout=10)
    assert [(d["messageId"], d["attempt"]) for d in listed] == [
        ("msg_bbbbbbbbbbbb", 1),
        ("msg_aaaaaaaaaaaa", 2),
        ("msg_aaaaaaaaaaaa", 1),
    ]
    assert listed[2] == {
        "messageId": "msg_aaaaaaaaaaaa",
        "appId": app_id,
        "attempt": 1,
        "status": "failed",
        "responseCode": 500,
        "durationMs": 12.5,
        "error": "HTTP 500",
        "attemptedAt": "2026-03-01T14:00:00.000Z",
        "nextAttemptAt": "2026-03-01T14:00:05.000Z",
    }
    failed = (await c.get(path + "?status=failed", headers=tenant["auth"])).json()["deliveries"]
    assert [d["attempt"] for d in failed] == [1] and failed[0]["status"] == "failed"
    one = (await c.get(path + "?messageId=msg_bbbbbbbbbbbb", headers=tenant["auth"])).json()["deliveries"]
    assert [d["messageId"] for d in one] == ["msg_bbbbbbbbbbbb"]

    seen, cursor = [], None
    while True:
        query = f"?limit=1&cursor={cursor}" if cursor else "?limit=1"
        page = (await c.get(path + query, headers=tenant["auth"])).json()
        seen += [(d["messageId"], d["attempt"]) for d in page["deliveries"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == [(d["messageId"], d["attempt"]) for d in listed]

    assert_error(await c.get(path, headers=other["auth"]), 404, "not_found")
    assert_error(await c.get(path + "?status=maybe", headers=tenant["auth"]), 422, "validation_error")
    assert_error(await c.get(path + "?cursor=nonsense", headers=tenant["auth"]), 422, "validation_error")


async def test_fanout_disables_and_a_put_re_enables(
    registry: Registry, kafka_settings: KafkaSettings
) -> None:
    c, tenant = registry.client, await registry.tenant()
    app_id = await _app(registry, tenant)
    now = ids.utcnow() + timedelta(seconds=1)
    event = AppEndpointDisabled(
        app_id=app_id, tenant_id=tenant["tenantId"], failing_since=now - timedelta(days=5), disabled_at=now
    )
    await publish_events(kafka_settings, topics.DELIVERIES, (app_id, event))

    async def disabled() -> bool:
        return bool((await c.get(f"/v1/apps/{app_id}", headers=tenant["auth"])).json()["disabled"])

    await eventually(disabled, timeout=10)
    r = await c.put(f"/v1/apps/{app_id}", json={"disabled": False}, headers=tenant["auth"])
    assert r.json()["disabled"] is False
    states = await keyed_events(kafka_settings, topics.APPS, app_id, count=3, timeout=5)
    assert [s.disabled for s in states if isinstance(s, AppUpserted)] == [False, True, False]


async def test_manual_retry_is_published_for_fanout(
    registry: Registry, kafka_settings: KafkaSettings
) -> None:
    c, tenant, other = registry.client, await registry.tenant(), await registry.tenant("other")
    app_id = await _app(registry, tenant)
    no_url = await _app(registry, tenant, url=None)
    n = notification("sub-retry")
    raw = RcNotification(
        tenant_id=tenant["tenantId"],
        subscription_id="sub-retry",
        rc_message_id=n["body"]["id"],
        received_at=ids.utcnow(),
        notification=n,
    )
    await publish_events(kafka_settings, topics.RC_RAW, (raw.rc_message_id, raw))

    async def stored() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = (await c.get("/v1/sms/messages", headers=tenant["auth"])).json()[
            "messages"
        ]
        return found

    [message] = await eventually(stored, timeout=10)
    path = f"/v1/apps/{app_id}/deliveries/{message['messageId']}/retry"
    r = await c.post(path, headers=tenant["auth"])
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "queued" and r.json()["messageId"] == message["messageId"]

    assert_error(await c.post(path, headers=other["auth"]), 404, "not_found")
    assert_error(
        await c.post(f"/v1/apps/{app_id}/deliveries/msg_000000000000/retry", headers=tenant["auth"]),
        404,
        "not_found",
    )
    assert_error(
        await c.post(f"/v1/apps/{no_url}/deliveries/{message['messageId']}/retry", headers=tenant["auth"]),
        409,
        "conflict",
    )

    [request] = await keyed_events(kafka_settings, topics.DELIVERY_REQUESTS, app_id, timeout=5)
    assert isinstance(request, DeliveryRequested) and request.app_id == app_id
    assert request.event.message_id == message["messageId"] and request.event.body == message["body"]
    assert request.event.from_ == message["from"] and request.tenant_id == tenant["tenantId"]
