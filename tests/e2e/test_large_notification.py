"""A notification at ingest's body limit through the real stack: accepted, stored and delivered in full;
one byte over the limit refused with 413 before anything is read or verified.

Ingest refuses a body over ``GRAVITY_INGEST_MAX_BODY_BYTES`` (1 MiB by default). A body of exactly that
size must still go all the way: into ``gravity.rc.raw`` and the canonical stream (the producers send
records of up to 4 MiB and the topics are created with ``max.message.bytes`` to match), into the
registry's store, and out to the app's webhook, byte for byte.

Read as a specification: each test names the promise of the contract it checks.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from tests.e2e.conftest import MESSAGE_ID, Accounts, RealStack, Tenant, go_live, hooks, rc_message_id
from tests.support import SMS_INBOUND_FIELDS, Received, WebhookReceiver, assert_error, eventually

from gravity_ingest.settings import Settings as IngestSettings
from gravity_webhooks import verify

LIMIT = int(
    os.environ.get("GRAVITY_INGEST_MAX_BODY_BYTES", IngestSettings.model_fields["max_body_bytes"].default)
)
"""The limit the stack's ingest runs with: its default, unless the environment (which the stack
inherits) sets another."""


def padded(tenant: Tenant, size: int, fill: str) -> tuple[dict[str, Any], bytes]:
    """A new message in ``tenant``'s RingCentral account whose instant-SMS notification, serialised as
    RingCentral sends it, is exactly ``size`` bytes; the padding is the message's text (``subject``,
    which the gateway stores and delivers as ``body``). Returns the message and the notification bytes.

    ``fill`` is one ASCII letter, so every character is one byte in JSON and the arithmetic is exact.
    """
    rc = tenant.rc
    assert rc is not None
    message = rc.add_message(text="")
    # built once: its uuid is fresh on each call and of varying length, so the padding is measured on
    # the very notification that is sent
    notification = rc.notification(tenant.subscription_id, message)
    assert notification["body"]["subject"] == ""
    notification["body"]["subject"] = message["subject"] = fill * (size - len(orjson.dumps(notification)))
    body = orjson.dumps(notification)
    assert len(body) == size, (len(body), size)
    return message, body


def assert_whole(got: str, sent: str) -> None:
    """``got`` is the whole of ``sent``: compared by length and digest, so a failure names the sizes
    instead of printing a megabyte."""
    assert len(got) == len(sent), f"{len(got)} characters arrived of {len(sent)}"
    assert hashlib.sha256(got.encode()).digest() == hashlib.sha256(sent.encode()).digest(), "text differs"


def carrying(receiver: WebhookReceiver, path: str, rc_id: str) -> list[Received]:
    """What ``path`` received for RingCentral message ``rc_id``."""
    return [h for h in hooks(receiver, path) if rc_message_id(h) == rc_id]


@pytest.fixture
async def ingest(stack_process: RealStack) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the stack's ingest, as RingCentral is one."""
    async with httpx.AsyncClient(base_url=stack_process.ingest, timeout=30) as client:
        yield client


@pytest.mark.timeout(240)  # the module's stack starts within this test's setup (about a minute)
async def test_a_notification_at_the_body_limit_is_stored_and_delivered_in_full(
    api: httpx.AsyncClient,
    ingest: httpx.AsyncClient,
    rc: Accounts,
    receiver: WebhookReceiver,
) -> None:
    """Contract: ingest accepts a notification of up to its body limit; the message is stored and
    delivered with its whole text. One byte more is ``413 payload_too_large`` in the error shape,
    whether the length is declared or the body is streamed, and nothing of it is stored or delivered."""
    tenant = await go_live(api, rc, receiver, "large")
    assert tenant.rc is not None
    token = {"Verification-Token": tenant.rc.subscriptions[tenant.subscription_id].verification_token}
    json = {"Content-Type": "application/json"}

    # one byte over: refused on the declared Content-Length, and again when streamed without one
    # (chunked), where ingest must stop reading at the limit. The token is right: size comes first.
    over, over_body = padded(tenant, LIMIT + 1, "o")
    r = await ingest.post("/v1/webhooks/ringcentral", content=over_body, headers=token | json)
    assert_error(r, 413, "payload_too_large")

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(over_body), 64 * 1024):
            yield over_body[start : start + 64 * 1024]

    r = await ingest.post("/v1/webhooks/ringcentral", content=chunks(), headers=token | json)
    assert "content-length" not in r.request.headers  # streamed: the limit is enforced while reading
    assert_error(r, 413, "payload_too_large")

    # exactly at the limit: accepted once the broker holds it (the subscription is known: go_live
    # delivered a probe through it)
    message, body = padded(tenant, LIMIT, "x")
    text = message["subject"]
    assert len(text) > LIMIT - 4096  # nearly all of the body is the stored text
    r = await ingest.post("/v1/webhooks/ringcentral", content=body, headers=token | json)
    assert r.status_code == 200 and r.json() == {"status": "ok"}, r.text[:500]

    # delivered in full to the app's webhook: the exact sms_inbound, signed
    [hook] = await eventually(lambda: carrying(receiver, "/large", message["id"]), timeout=30)
    verify(tenant.secret, hook.headers, hook.body)
    event = orjson.loads(hook.body)
    assert tuple(event) == SMS_INBOUND_FIELDS
    assert event["type"] == "sms_inbound" and MESSAGE_ID.match(event["messageId"])
    assert event["tenantId"] == tenant.tenant_id and event["rcMessageId"] == message["id"]
    assert_whole(event["body"], text)

    # stored in full: the messages API gives the same text
    r = await api.get(f"/v1/sms/messages/{event['messageId']}", headers=tenant.auth)
    assert r.status_code == 200, r.text[:500]
    stored = r.json()
    assert stored["rcMessageId"] == message["id"] and stored["messageId"] == event["messageId"]
    assert_whole(stored["body"], text)

    # the refused notification left no trace: not delivered (the later one was) and not stored
    assert carrying(receiver, "/large", over["id"]) == []
    r = await api.get("/v1/sms/messages", params={"limit": 100}, headers=tenant.auth)
    assert r.status_code == 200, r.text[:500]
    assert over["id"] not in {m["rcMessageId"] for m in r.json()["messages"]}
