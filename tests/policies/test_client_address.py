"""Client address: X-Forwarded-For counts only when the peer is one of our proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis

from policies.client_address import carried_ipv4, client_address, parse_ip
from redisdb import keys
from tests.server.support import asgi_client, make_app, session_record
from tests.support import write_policies

TRUSTED = (ipaddress.ip_network("10.9.0.0/16"), ipaddress.ip_network("fd00:9::/32"))
PROXY = "10.9.0.1"
AGENT = {"agent": "agence-immo-fr"}


def ip(text: str) -> Any:
    return ipaddress.ip_address(text)


@pytest.mark.parametrize(
    ("peer", "xff", "trusted", "expected"),
    [
        # No trusted proxies configured: the header is never read.
        ("192.0.2.10", ["203.0.113.5"], (), "192.0.2.10"),
        # Untrusted peer: whatever it claims, it is the client.
        ("192.0.2.10", ["203.0.113.5"], TRUSTED, "192.0.2.10"),
        ("192.0.2.10", ["10.9.0.7"], TRUSTED, "192.0.2.10"),
        # Trusted peer: the right-most hop that is not ours.
        (PROXY, ["198.51.100.20"], TRUSTED, "198.51.100.20"),
        (PROXY, ["6.6.6.6, 198.51.100.20, 10.9.0.3"], TRUSTED, "198.51.100.20"),
        (PROXY, ["6.6.6.6", "198.51.100.20"], TRUSTED, "198.51.100.20"),
        (PROXY, ["198.51.100.20:5123"], TRUSTED, "198.51.100.20"),
        (PROXY, ["[2001:db8::7]:443"], TRUSTED, "2001:db8::7"),
        (PROXY, ["2001:db8::7, fd00:9::1"], TRUSTED, "2001:db8::7"),
        # Only our proxies in the chain: the left-most of them is the best we know.
        (PROXY, ["10.9.0.3, 10.9.0.2"], TRUSTED, "10.9.0.3"),
        # A malformed hop: nothing left of it is trusted; the proxy that handed it is used.
        (PROXY, ["198.51.100.20, not-an-ip"], TRUSTED, PROXY),
        (PROXY, ["not-an-ip, 198.51.100.20"], TRUSTED, "198.51.100.20"),
        # Trusted peer, no header.
        (PROXY, [], TRUSTED, PROXY),
        # An IPv4-mapped IPv6 peer is the IPv4 address (dual-stack sockets).
        ("::ffff:10.9.0.1", ["198.51.100.20"], TRUSTED, "198.51.100.20"),
    ],
)
def test_client_address_rules(
    peer: str, xff: list[str], trusted: tuple[Any, ...], expected: str
) -> None:
    assert client_address(peer, xff, trusted) == ip(expected)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("::ffff:198.51.100.20", "198.51.100.20"),  # IPv4-mapped
        ("64:ff9b::198.51.100.20", "198.51.100.20"),  # NAT64, well-known prefix
        ("64:ff9b::c633:6414", "198.51.100.20"),
        ("2002:c633:6414::1", "198.51.100.20"),  # 6to4: the whole /48 is the IPv4
        ("2002:c633:6414:beef:1:2:3:4", "198.51.100.20"),
        ("2001:0:4136:e378:8000:63bf:3cff:fdf2", "195.0.2.13"),  # Teredo: the client's IPv4
        ("2001:db8::1", "2001:db8::1"),  # documentation range: itself
        ("64:ff9b:1::c633:6414", "64:ff9b:1::c633:6414"),  # local-use NAT64: not mapped
        ("198.51.100.20", "198.51.100.20"),
    ],
)
def test_addresses_carrying_an_ipv4_are_that_ipv4(address: str, expected: str) -> None:
    assert carried_ipv4(ip(address)) == ip(expected)


def test_no_usable_peer_is_no_address() -> None:
    assert client_address(None, ["198.51.100.20"], TRUSTED) is None
    assert client_address("unix-socket", ["198.51.100.20"], TRUSTED) is None
    assert parse_ip(" 203.0.113.7 ") == ip("203.0.113.7")
    assert parse_ip("[::1]") == ip("::1")


# --- through the HTTP app: the pseudonym and the limit bucket follow the right address ----


@pytest.fixture(scope="module")
def app(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    # One session at a time per visitor: a second admission shows which bucket was used.
    policies = write_policies(
        tmp_path_factory.mktemp("policies"),
        limits={"visitor": {"concurrent_sessions": 1, "sessions_per_hour": 50,
                            "sessions_per_day": 50}},
    )  # fmt: skip
    return make_app(redis_url, policies, trusted_proxies=["10.9.0.0/16", "fd00:9::/32"])


@pytest.fixture
async def clients(app: Any, redis_client: redis.Redis) -> AsyncIterator[Any]:
    opened: list[Any] = []

    def open_from(peer: str) -> Any:
        client = asgi_client(app, peer)
        opened.append(client)
        return client

    yield open_from
    for client in opened:
        await client.aclose()


async def pseudonym_of(app: Any, address: str) -> str:
    hasher = app.state.services.hasher
    return str(hasher.visitor(await hasher.current_salt(), ip(address)))


def visitor_keys(redis_client: redis.Redis, kind: str) -> set[str]:
    pattern = f"{keys.PREFIX}{kind}:*"
    return {k.decode().split(":")[2] for k in redis_client.scan_iter(match=pattern)}


async def test_forged_forwarded_for_from_untrusted_peer_changes_nothing(
    app: Any, clients: Any, redis_client: redis.Redis
) -> None:
    peer = clients("192.0.2.10")
    first = await peer.post("/api/token", json=AGENT)
    assert first.status_code == 201
    visitor = session_record(redis_client, first.json()["session_id"])["visitor"]
    assert visitor == await pseudonym_of(app, "192.0.2.10")

    # Forged headers: another address, a list, one of our proxies' addresses.
    for forged in ("203.0.113.5", "203.0.113.5, 198.51.100.9", "10.9.0.7"):
        again = await peer.post("/api/token", json=AGENT, headers={"X-Forwarded-For": forged})
        assert again.status_code == 429, forged
        assert again.json()["error"] == "rate_limited"
        assert again.json()["reason"] == "visitor_concurrent"

    # Same bucket, same pseudonym: nothing at all was keyed by a forged address.
    assert visitor_keys(redis_client, keys.VISITOR_ACTIVE) == {visitor}
    assert visitor_keys(redis_client, keys.VISITOR_REFUSALS) == {visitor}
    assert visitor_keys(redis_client, keys.VISITOR_SESSIONS) == {visitor}


async def test_trusted_proxy_uses_the_rightmost_untrusted_hop(
    app: Any, clients: Any, redis_client: redis.Redis
) -> None:
    response = await clients(PROXY).post(
        "/api/token", json=AGENT, headers={"X-Forwarded-For": "6.6.6.6, 198.51.100.20, 10.9.0.3"}
    )
    assert response.status_code == 201
    visitor = session_record(redis_client, response.json()["session_id"])["visitor"]
    assert visitor == await pseudonym_of(app, "198.51.100.20")
    assert visitor != await pseudonym_of(app, "6.6.6.6")
    assert visitor != await pseudonym_of(app, PROXY)

    # The same client through another of our proxies, with a different forged prefix:
    # same visitor, so the concurrency limit holds.
    refused = await clients("10.9.0.2").post(
        "/api/token", json=AGENT, headers={"X-Forwarded-For": "1.2.3.4, 198.51.100.20"}
    )
    assert refused.status_code == 429
    # A different client behind the same proxy is a different visitor.
    other = await clients(PROXY).post(
        "/api/token", json=AGENT, headers={"X-Forwarded-For": "198.51.100.21"}
    )
    assert other.status_code == 201
    assert len(visitor_keys(redis_client, keys.VISITOR_ACTIVE)) == 2


async def test_ipv6_addresses_in_one_64_are_one_visitor(
    app: Any, clients: Any, redis_client: redis.Redis
) -> None:
    proxy = clients(PROXY)
    first = await proxy.post(
        "/api/token", json=AGENT, headers={"X-Forwarded-For": "2001:db8:77:1::1"}
    )
    assert first.status_code == 201
    # Another host of the same /64 (privacy addresses rotate within it): same visitor.
    same_net = await proxy.post(
        "/api/token", json=AGENT, headers={"X-Forwarded-For": "2001:db8:77:1:abcd:ef01:2:3"}
    )
    assert same_net.status_code == 429
    # Directly connected from that /64, without any proxy: still the same visitor.
    direct = await clients("2001:db8:77:1::99").post("/api/token", json=AGENT)
    assert direct.status_code == 429
    # The neighbouring /64 is someone else.
    neighbour = await proxy.post(
        "/api/token", json=AGENT, headers={"X-Forwarded-For": "2001:db8:77:2::1"}
    )
    assert neighbour.status_code == 201
    visitor = session_record(redis_client, first.json()["session_id"])["visitor"]
    assert visitor == await pseudonym_of(app, "2001:db8:77:1::ffff")
