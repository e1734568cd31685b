"""The production delivery client's connect-time guard: installed for real, or no client at all."""

from __future__ import annotations

import httpcore
import httpx
import pytest
from tests.support import running_receiver

from gravity_webhooks import BlockedAddressError, DeliveryClient, new_signing_secret
from gravity_webhooks.client import PublicOnlyBackend, install_public_only_backend


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"])
async def test_production_client_refuses_loopback_through_a_real_connection_attempt(host: str) -> None:
    """The system resolver, the real pool: the receiver on loopback never sees the request."""
    client = DeliveryClient(production=True, user_agent="t")
    try:
        async with running_receiver() as receiver:
            result = await client.deliver(
                f"http://{host}:{receiver.port}/hook", b"{}", message_id="m", secrets=[new_signing_secret()]
            )
            assert receiver.received() == []
    finally:
        await client.aclose()
    assert (result.ok, result.status) == (False, None)
    assert result.body.startswith("refused:") and "non-public" in result.body


async def test_the_backend_refuses_loopback_and_unix_sockets() -> None:
    backend = PublicOnlyBackend()
    async with running_receiver() as receiver:
        with pytest.raises(BlockedAddressError, match="non-public"):
            await backend.connect_tcp("127.0.0.1", receiver.port)
    with pytest.raises(BlockedAddressError, match="unix"):
        await backend.connect_unix_socket("any.sock")


async def test_a_development_client_still_reaches_loopback() -> None:
    client = DeliveryClient(production=False, user_agent="t")
    try:
        async with running_receiver() as receiver:
            result = await client.deliver(
                receiver.url(), b"{}", message_id="m", secrets=[new_signing_secret()]
            )
    finally:
        await client.aclose()
    assert result.ok


async def test_install_puts_the_backend_on_the_pool_httpx_built() -> None:
    transport = httpx.AsyncHTTPTransport(retries=0)
    backend = PublicOnlyBackend()
    try:
        install_public_only_backend(transport, backend)
        assert transport._pool._network_backend is backend
    finally:
        await transport.aclose()


async def test_install_refuses_a_transport_without_an_httpcore_pool() -> None:
    """httpx.MockTransport is a real transport that, like a future httpx might, has no ``_pool``."""
    transport = httpx.MockTransport(lambda request: httpx.Response(200))
    with pytest.raises(RuntimeError, match=r"cannot install the SSRF guard.*_network_backend"):
        install_public_only_backend(transport, PublicOnlyBackend())


async def test_install_refuses_a_pool_whose_backend_attribute_is_gone() -> None:
    """What a renamed httpcore attribute looks like: setting it would create a name nobody reads."""
    transport = httpx.AsyncHTTPTransport(retries=0)
    try:
        del transport._pool._network_backend
        with pytest.raises(RuntimeError, match=r"cannot install the SSRF guard.*_network_backend"):
            install_public_only_backend(transport, PublicOnlyBackend())
        assert not hasattr(transport._pool, "_network_backend")
    finally:
        await transport.aclose()


async def test_install_refuses_a_pool_that_dials_a_proxy() -> None:
    """Through a proxy the guard would check the proxy's address, never the endpoint's."""
    transport = httpx.AsyncHTTPTransport(proxy="http://127.0.0.1:3128", retries=0)
    try:
        assert isinstance(transport._pool, httpcore.AsyncHTTPProxy)
        with pytest.raises(RuntimeError, match="does not dial through the installed network backend"):
            install_public_only_backend(transport, PublicOnlyBackend())
    finally:
        await transport.aclose()
