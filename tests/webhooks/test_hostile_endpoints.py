"""What a hostile endpoint can do to the delivery client: every answer is bounded in time and memory."""

from __future__ import annotations

import gzip

import pytest
from tests.support import eventually, running_receiver
from tests.webhooks.misbehaving import SCRIPTS, misbehaving_endpoint

from gravity_webhooks import RESPONSE_BODY_LIMIT, DeliveryClient, new_signing_secret

SECRETS = [new_signing_secret()]


@pytest.mark.parametrize("script", ["trickled_status_line", "endless_continue", "trickled_body"])
async def test_a_trickling_answer_is_cut_by_the_overall_timeout(script: str) -> None:
    """Each byte arrives well inside any per-read timeout; only the whole-attempt budget stops it."""
    client = DeliveryClient(production=False, user_agent="t", timeout=0.5)
    try:
        async with misbehaving_endpoint(SCRIPTS[script]) as endpoint:
            result = await client.deliver(endpoint.url(), b"{}", message_id="m", secrets=SECRETS)
            assert endpoint.requests == 1
            await eventually(lambda: endpoint.open_connections == 0, timeout=2)  # the client hung up
    finally:
        await client.aclose()
    assert (result.ok, result.status) == (False, None) and "timed out after 0.5 s" in result.body
    assert 450 <= result.duration_ms < 2000


async def test_a_header_block_without_end_is_refused_at_the_parser_limit() -> None:
    """h11 (as httpcore sets it up) stops at 100 KiB of incomplete head, long before the timeout."""
    client = DeliveryClient(production=False, user_agent="t", timeout=5.0)
    try:
        async with misbehaving_endpoint(SCRIPTS["endless_header"]) as endpoint:
            result = await client.deliver(endpoint.url(), b"{}", message_id="m", secrets=SECRETS)
            await eventually(lambda: endpoint.open_connections == 0, timeout=2)
    finally:
        await client.aclose()
    assert (result.ok, result.status) == (False, None)
    assert result.body.startswith("RemoteProtocolError")
    assert result.duration_ms < 4000


async def test_a_body_without_end_is_cut_at_the_limit() -> None:
    client = DeliveryClient(production=False, user_agent="t", timeout=5.0)
    try:
        async with misbehaving_endpoint(SCRIPTS["endless_body"]) as endpoint:
            result = await client.deliver(endpoint.url(), b"{}", message_id="m", secrets=SECRETS)
            await eventually(lambda: endpoint.open_connections == 0, timeout=2)  # not kept alive
    finally:
        await client.aclose()
    assert (result.ok, result.status) == (True, 200)
    assert result.body == "a" * RESPONSE_BODY_LIMIT
    assert result.duration_ms < 4000


async def test_redirects_are_answers_not_instructions() -> None:
    client = DeliveryClient(production=False, user_agent="t")
    try:
        async with running_receiver() as receiver:
            results = {}
            for status in (301, 302, 303, 307, 308):
                receiver.behave(f"/{status}", status=status, headers={"location": receiver.url("/target")})
                results[status] = await client.deliver(
                    receiver.url(f"/{status}"), b"{}", message_id="m", secrets=SECRETS
                )
            assert receiver.received("/target") == []
    finally:
        await client.aclose()
    for status, result in results.items():
        assert (result.ok, result.status, result.error) == (False, status, f"HTTP {status}")


async def test_a_compressed_answer_is_never_inflated() -> None:
    """The client asks for no encoding and reads raw bytes, so a gzip bomb stays its compressed size."""
    bomb = gzip.compress(b"0" * 10_000_000, compresslevel=9)
    client = DeliveryClient(production=False, user_agent="t")
    try:
        async with running_receiver() as receiver:
            receiver.behave("/bomb", body=bomb, headers={"content-encoding": "gzip"})
            result = await client.deliver(receiver.url("/bomb"), b"{}", message_id="m", secrets=SECRETS)
            [got] = receiver.received("/bomb")
    finally:
        await client.aclose()
    assert got.headers["accept-encoding"] == "identity"
    assert result.ok and len(result.body) <= RESPONSE_BODY_LIMIT
    assert result.body.startswith("\x1f")  # gzip's magic number: the bytes as sent, not inflated
    assert "0000" not in result.body
