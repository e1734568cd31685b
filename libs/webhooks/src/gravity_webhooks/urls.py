"""Webhook URL rules from the contract, and the public-address test used at save and connect time."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

__all__ = [
    "MAX_URL_LENGTH",
    "BlockedAddressError",
    "Resolver",
    "WebhookUrlError",
    "is_public_address",
    "resolve_host",
    "validate_webhook_url",
]

MAX_URL_LENGTH = 2000

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""(host, port) → the IP addresses a connection would use."""


class WebhookUrlError(ValueError):
    """The URL breaks a webhookUrl rule; the message says which."""


class BlockedAddressError(ConnectionError):
    """The host resolved to an address the gateway does not deliver to (loopback, private, …)."""


def is_public_address(address: str) -> bool:
    """True only for globally routable unicast addresses (IPv4-mapped IPv6 judged as IPv4)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (A and AAAA)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _split(url: str, *, allow_http: bool) -> tuple[str, str, int]:
    if len(url) > MAX_URL_LENGTH:
        raise WebhookUrlError(f"webhookUrl is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookUrlError(f"webhookUrl is not a valid URL: {exc}") from exc
    allowed = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in allowed:
        raise WebhookUrlError(
            "webhookUrl must use https" + (" or http (development only)" if allow_http else "")
        )
    if not parts.hostname:
        raise WebhookUrlError("webhookUrl must be an absolute URL with a host")
    if parts.username or parts.password:
        raise WebhookUrlError("webhookUrl must not carry credentials")
    if any(c.isspace() for c in url):
        raise WebhookUrlError("webhookUrl must not contain white space")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def validate_webhook_url(url: str, *, production: bool, resolver: Resolver = resolve_host) -> str:
    """Return ``url`` if it follows the rules, else raise :class:`WebhookUrlError`.

    Development accepts http and any host; production accepts https only, to hosts whose every
    resolved address is public. Delivery checks the address again when it connects.
    """
    _, host, port = _split(url, allow_http=not production)
    if production:
        try:
            addresses = await resolver(host, port)
        except OSError as exc:
            raise WebhookUrlError(f"webhookUrl host {host!r} does not resolve") from exc
        if not addresses or not all(is_public_address(a) for a in addresses):
            raise WebhookUrlError(
                "webhookUrl host resolves to a loopback, private, link-local or reserved address"
            )
    return url
