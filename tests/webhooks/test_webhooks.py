"""gravity_webhooks: signatures, URL rules, and the delivery client against a real receiver."""

from __future__ import annotations

import base64
import time

import orjson
import pytest
from tests.support import free_port, running_receiver

from gravity_webhooks import (
    RESPONSE_BODY_LIMIT,
    DeliveryClient,
    SignatureError,
    WebhookUrlError,
    is_public_address,
    new_signing_secret,
    sign,
    signature_header,
    validate_webhook_url,
    verify,
)

SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_signature_matches_the_standard_webhooks_test_vector() -> None:
    body = b'{"test": 2432232314}'
    signature = sign(SPEC_SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_new_secrets_are_whsec_with_at_least_24_random_bytes() -> None:
    secret = new_signing_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret[6:])) >= 24
    assert secret != new_signing_secret()


def test_verify_accepts_any_of_several_signatures_and_refuses_the_rest() -> None:
    old, new = new_signing_secret(), new_signing_secret()
    now = int(time.time())
    body = b'{"type":"sms_inbound"}'
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(now),
        "webhook-signature": signature_header([new, old], "msg_1", now, body),
    }
    verify(old, headers, body)
    verify(new, headers, body)
    with pytest.raises(SignatureError, match="no signature"):
        verify(new_signing_secret(), headers, body)
    with pytest.raises(SignatureError, match="no signature"):
        verify(new, headers, body + b" ")
    with pytest.raises(SignatureError, match="tolerance"):
        verify(new, headers, body, now=now + 301)
    with pytest.raises(SignatureError, match="missing"):
        verify(new, {"webhook-id": "msg_1"}, body)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.215.14", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),
        ("224.0.0.1", False),
        ("not-an-ip", False),
    ],
)
def test_public_address(address: str, public: bool) -> None:
    assert is_public_address(address) is public


def _resolver(mapping: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> list[str]:
        if host not in mapping:
            raise OSError("no such host")
        return mapping[host]

    return resolve


@pytest.mark.parametrize(
    ("url", "production", "match"),
    [
        ("ftp://example.com/x", False, "https"),
        ("http://example.com/x", True, "https"),
        ("https:///nohost", False, "host"),
        ("/relative/path", False, "https"),
        ("https://example.com/" + "a" * 2000, False, "2000"),
        ("https://user:pw@example.com/", False, "credentials"),
        ("https://example.com:99999/", False, "valid URL"),
        ("https://internal.test/", True, "private"),
        ("https://localhost.test/", True, "private"),
        ("https://nowhere.test/", True, "resolve"),
    ],
)
async def test_url_rules_refuse(url: str, production: bool, match: str) -> None:
    resolver = _resolver({"internal.test": ["93.184.215.14", "10.0.0.5"], "localhost.test": ["::1"]})
    with pytest.raises(WebhookUrlError, match=match):
        await validate_webhook_url(url, production=production, resolver=resolver)


async def test_url_rules_accept() -> None:
    resolver = _resolver({"hooks.example.com": ["93.184.215.14"]})
    for url, production in [
        ("https://hooks.example.com/in", True),
        ("http://127.0.0.1:9000/in", False),
        ("https://hooks.example.com/in", False),
    ]:
        assert await validate_webhook_url(url, production=production, resolver=resolver) == url


async def test_delivery_posts_signed_exact_bytes_with_the_contract_headers() -> None:
    secret = new_signing_secret()
    body = orjson.dumps({"type": "sms_inbound", "messageId": "msg_a1b2c3d4e5f6"})
    client = DeliveryClient(production=False, user_agent="Gravity-SMS/test")
    try:
        async with running_receiver() as receiver:
            result = await client.deliver(
                receiver.url(), body, message_id="msg_a1b2c3d4e5f6", secrets=[secret]
            )
            [got] = receiver.received("/hook")
    finally:
        await client.aclose()
    assert result.ok and result.status == 200 and result.body == "ok" and result.error is None
    assert got.body == body
    assert got.headers["content-type"] == "application/json"
    assert got.headers["user-agent"] == "Gravity-SMS/test"
    assert got.headers["webhook-id"] == "msg_a1b2c3d4e5f6"
    verify(secret, got.headers, got.body)


async def test_delivery_reports_failures_without_raising() -> None:
    client = DeliveryClient(production=False, user_agent="t", timeout=0.5)
    try:
        async with running_receiver() as receiver:
            receiver.behave("/500", status=500, body=b"boom", headers={"retry-after": "7"})
            receiver.behave("/hang", hang=True)
            receiver.behave("/big", body=b"x" * 100_000)
            receiver.behave("/redirect", status=302, headers={"location": "http://127.0.0.1:1/"})
            secrets = [new_signing_secret()]
            failed = await client.deliver(receiver.url("/500"), b"{}", message_id="m", secrets=secrets)
            hung = await client.deliver(receiver.url("/hang"), b"{}", message_id="m", secrets=secrets)
            big = await client.deliver(receiver.url("/big"), b"{}", message_id="m", secrets=secrets)
            moved = await client.deliver(receiver.url("/redirect"), b"{}", message_id="m", secrets=secrets)
        refused = await client.deliver(
            f"http://127.0.0.1:{free_port()}/", b"{}", message_id="m", secrets=secrets
        )
    finally:
        await client.aclose()
    assert (failed.ok, failed.status, failed.body, failed.retry_after) == (False, 500, "boom", 7.0)
    assert (hung.ok, hung.status) == (False, None) and "timed out" in hung.body
    assert 450 <= hung.duration_ms < 2000
    assert big.ok and len(big.body) == RESPONSE_BODY_LIMIT
    assert (moved.ok, moved.status) == (False, 302)
    assert (refused.ok, refused.status) == (False, None) and "connection failed" in refused.body


async def test_production_client_refuses_non_public_addresses_at_connect_time() -> None:
    """DNS rebinding: the name resolved public when saved, private when dialled — refused."""
    answers = iter([["93.184.215.14"], ["127.0.0.1"]])
    calls: list[str] = []

    async def rebinding(host: str, port: int) -> list[str]:
        calls.append(host)
        return next(answers)

    url = "https://rebind.test/hook"
    assert await validate_webhook_url(url, production=True, resolver=rebinding) == url
    client = DeliveryClient(production=True, user_agent="t", resolver=rebinding)
    try:
        async with running_receiver() as receiver:
            result = await client.deliver(
                f"http://rebind.test:{receiver.port}/hook",
                b"{}",
                message_id="m",
                secrets=[new_signing_secret()],
            )
            assert receiver.received() == []
    finally:
        await client.aclose()
    assert calls == ["rebind.test", "rebind.test"]
    assert not result.ok and result.status is None and "non-public" in result.body


def test_secret_box_round_trips_and_refuses_another_key() -> None:
    from gravity_webhooks import DecryptionError, SecretBox

    box = SecretBox("k" * 32)
    secret = new_signing_secret()
    first, second = box.encrypt(secret), box.encrypt(secret)
    assert first != second and secret not in first
    assert box.decrypt(first) == secret == SecretBox("k" * 32).decrypt(second)
    with pytest.raises(DecryptionError):
        SecretBox("j" * 32).decrypt(first)
    with pytest.raises(ValueError, match="16"):
        SecretBox("short")
