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


_NOT_GLOBAL_V6 = tuple(
    ipaddress.IPv6Network(net)
    for net in (
        "64:ff9b:1::/48",  # NAT64 local-use prefix (RFC 8215): translates to whatever the operator routes
        "100:0:0:1::/64",  # dummy prefix (RFC 9780)
        "3fff::/20",  # documentation (RFC 9637)
        "5f00::/16",  # SRv6 segment identifiers (RFC 9602)
        "fec0::/10",  # deprecated site-local (RFC 3879)
    )
)
"""IANA special-purpose blocks that are not globally reachable but that older Pythons' ``is_global``
(3.11.7 among them) still calls global; judged here so the answer does not depend on the patch release."""

_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses that a translator, tunnel or dual stack would reach for ``ip``."""
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    if ip in _NAT64_WELL_KNOWN or ip in _IPV4_COMPATIBLE or ip in _IPV4_TRANSLATED:
        return [low32]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:
        return list(ip.teredo)  # (server, client)
    return []


def _is_public_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip.is_global and not ip.is_multicast


def is_public_address(address: str) -> bool:
    """True only for globally routable unicast addresses.

    IPv4-mapped IPv6 (``::ffff:a.b.c.d``) is judged as its IPv4 address. Every other form that carries
    an IPv4 address — NAT64 (``64:ff9b::/96``), IPv4-compatible (``::a.b.c.d``), IPv4-translated
    (``::ffff:0:a.b.c.d``), 6to4 (``2002::/16``) and Teredo (``2001::/32``, server and client) — must be
    public itself and carry only public IPv4 addresses, because a translator or tunnel on the way would
    deliver to the embedded address. The NAT64 local-use prefix ``64:ff9b:1::/48`` is never public.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv4Address):
        return _is_public_ip(ip)
    if ip.ipv4_mapped is not None:
        return _is_public_ip(ip.ipv4_mapped)
    if any(ip in net for net in _NOT_GLOBAL_V6):
        return False
    return _is_public_ip(ip) and all(_is_public_ip(v4) for v4 in _embedded_ipv4(ip))


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
