"""Which address a request comes from.

The socket peer, unless the peer is one of our own proxies (TRUSTED_PROXIES): then the
right-most X-Forwarded-For hop that is not a trusted proxy. Anything left of that hop was
written by the client and could be forged, so it is never used.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

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


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def carried_ipv4(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one carries, else the address itself. Whoever holds one IPv4
    address also holds its IPv4-mapped and NAT64 forms, and with 6to4 a whole /48 (65,536
    /64s): each form must count as that IPv4, or it is as many visitors as it has forms.
    Teredo carries the client's public IPv4 (its NAT's), which is who it is too."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
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
