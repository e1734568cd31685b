"""is_public_address: every IPv6 form that carries an IPv4 address is judged by that address too."""

from __future__ import annotations

import ipaddress

import pytest

from gravity_webhooks import is_public_address


def _teredo(server: str, client: str) -> str:
    """A Teredo address (RFC 4380) for ``server`` and ``client``; the client is stored inverted."""
    value = (
        (0x2001_0000 << 96)
        | (int(ipaddress.IPv4Address(server)) << 64)
        | (int(ipaddress.IPv4Address(client)) ^ 0xFFFF_FFFF)
    )
    address = ipaddress.IPv6Address(value)
    assert address.teredo == (ipaddress.IPv4Address(server), ipaddress.IPv4Address(client))
    return str(address)


@pytest.mark.parametrize(
    "address",
    [
        # NAT64 well-known prefix (RFC 6052): the translator dials the embedded IPv4 address.
        "64:ff9b::127.0.0.1",
        "64:ff9b::10.0.0.1",
        "64:ff9b::192.168.1.1",
        "64:ff9b::169.254.169.254",
        "64:ff9b::100.64.0.1",
        # NAT64 local-use prefix (RFC 8215): not globally reachable whatever it embeds.
        "64:ff9b:1::7f00:1",
        "64:ff9b:1::a00:1",
        "64:ff9b:1:ffff::a9fe:a9fe",
        "64:ff9b:1::808:808",
        # IPv4-compatible (deprecated, RFC 4291 2.5.5.1).
        "::127.0.0.1",
        "::10.0.0.1",
        "::169.254.169.254",
        # IPv4-mapped.
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:172.16.0.1",
        "::ffff:169.254.169.254",
        # IPv4-translated (RFC 2765).
        "::ffff:0:127.0.0.1",
        "::ffff:0:10.0.0.1",
        # 6to4 (RFC 3056): the relay reaches the embedded IPv4 address.
        "2002:7f00:1::1",
        "2002:a00:1::1",
        "2002:c0a8:101::1",
        "2002:a9fe:a9fe::1",
        # Teredo (RFC 4380): server or client private.
        _teredo("10.0.0.1", "93.184.215.14"),
        _teredo("93.184.215.14", "127.0.0.1"),
        _teredo("93.184.215.14", "192.168.1.1"),
        # Not globally reachable (IANA special-purpose registry) though older Pythons say global.
        "100:0:0:1::1",
        "3fff::1",
        "5f00::1",
        "fec0::1",
        # Not globally reachable by Python's own is_global.
        "::",
        "::1",
        "100::1",
        "2001:db8::1",
        "fe80::1%eth0",
        "fc00::1",
        "fd12:3456::1",
        "198.18.0.1",
        "192.0.2.1",
        "240.0.0.1",
        "255.255.255.255",
        "ff02::1",
    ],
)
def test_non_public_forms_are_refused(address: str) -> None:
    assert is_public_address(address) is False


@pytest.mark.parametrize(
    "address",
    [
        "93.184.215.14",
        "2606:4700:4700::1111",
        "64:ff9b::93.184.215.14",
        "::ffff:93.184.215.14",
        "2002:5db8:d70e::1",
    ],
)
def test_public_forms_are_accepted(address: str) -> None:
    assert is_public_address(address) is True
