"""Which address a request comes from.

The socket peer, unless the peer is one of our own proxies (TRUSTED_PROXIES): then the
right-most X-Forwarded-For hop that is not a trusted proxy. Anything left of that hop was
written by the client and could be forged, so it is never used.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_ip(value: str) -> IPAddress | None:
    value = value.strip()
    if value.startswith("[") and "]" in value:  # "[2001:db8::1]:443"
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # "203.0.113.7:5123"
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


# The carriers' prefixes, as the address's leading bits (integer tests: this runs on every
# token request, where ipaddress's network objects cost more than the test: docs/benchmarks.md).
_MAPPED = 0xFFFF  # ::ffff:0:0/96, bits above the IPv4 part
_NAT64 = int(ipaddress.IPv6Address("64:ff9b::")) >> 32  # 64:ff9b::/96
_6TO4 = 0x2002  # 2002::/16, the IPv4 in the next 32 bits
_TEREDO = 0x20010000  # 2001::/32, the client's IPv4 inverted in the last 32 bits
_LOW32 = 0xFFFFFFFF


def carried_ipv4(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one carries, else the address itself. Whoever holds one IPv4
    address also holds its IPv4-mapped and NAT64 forms, and with 6to4 a whole /48 (65,536
    /64s): each form must count as that IPv4, or it is as many visitors as it has forms.
    Teredo carries the client's public IPv4 (its NAT's), which is who it is too."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    value = int(address)
    top96 = value >> 32
    if top96 in (_MAPPED, _NAT64):
        return ipaddress.IPv4Address(value & _LOW32)
    if value >> 112 == _6TO4:
        return ipaddress.IPv4Address((value >> 80) & _LOW32)
    if value >> 96 == _TEREDO:
        return ipaddress.IPv4Address(~value & _LOW32)
    return address


def _trusted(address: IPAddress, networks: Iterable[Network]) -> bool:
    return any(address in net for net in networks)


def client_address(
    peer: str | None, forwarded_for: list[str], trusted: tuple[Network, ...]
) -> IPAddress | None:
    """The client's address, or None when not even the peer is a valid address."""
    current = parse_ip(peer) if peer else None
    if current is None or not trusted or not _trusted(current, trusted):
        return current
    hops = [hop for header in forwarded_for for hop in header.split(",") if hop.strip()]
    for hop in reversed(hops):
        address = parse_ip(hop)
        if address is None:
            # A malformed hop: nothing left of it can be trusted, so the last proxy that
            # handed it to us is the best we know.
            return current
        current = address
        if not _trusted(address, trusted):
            return address
    return current


def request_address(scope: Mapping[str, Any], trusted: tuple[Network, ...]) -> IPAddress | None:
    """The client address of an ASGI HTTP request (peer and X-Forwarded-For as above)."""
    peer = scope["client"][0] if scope.get("client") else None
    forwarded = [v.decode("latin-1") for k, v in scope["headers"] if k == b"x-forwarded-for"]
    return client_address(peer, forwarded, trusted)
