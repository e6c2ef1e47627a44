"""Visitor pseudonyms: keyed, salted per period, IPv6 by /64, salts shared through Redis."""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
from redis.asyncio import Redis

from policies import load_policies
from policies.model import DAY_S, PRIVACY_MAX_DAYS
from policies.pseudonyms import SALT_RECHECK_S, Salt, VisitorHasher, normalise_ip, ua_family
from redisdb import keys

RETENTION = load_policies().retention
PEPPER = "pepper-for-tests-0123456789abcdefghij"


def ip(text: str) -> Any:
    return ipaddress.ip_address(text)


@pytest.fixture
async def aredis(redis_url: str, redis_client: redis.Redis) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def test_ipv6_is_reduced_to_its_64() -> None:
    assert normalise_ip(ip("198.51.100.77")) == "198.51.100.77"
    # Its IPv6 forms are the IPv4 (mapped, NAT64, 6to4 anywhere in its /48).
    for form in ("::ffff:198.51.100.77", "64:ff9b::198.51.100.77", "2002:c633:644d:9::1"):
        assert normalise_ip(ip(form)) == "198.51.100.77", form
    assert normalise_ip(ip("2001:db8:abcd:12:1:2:3:4")) == "2001:db8:abcd:12::/64"
    assert normalise_ip(ip("2001:db8:abcd:12::")) == "2001:db8:abcd:12::/64"


def test_pseudonyms_are_keyed_salted_and_kind_separated() -> None:
    salt = Salt(5, b"s" * 32)
    hasher = VisitorHasher(None, PEPPER, RETENTION)  # type: ignore[arg-type]
    v = hasher.visitor(salt, ip("198.51.100.77"))
    assert re.fullmatch(r"[0-9a-f]{32}", v)
    assert hasher.visitor(salt, ip("198.51.100.77")) == v  # stable within a period
    assert hasher.visitor(salt, ip("198.51.100.78")) != v
    # Another period's salt, another pepper: unlinkable.
    assert hasher.visitor(Salt(6, b"t" * 32), ip("198.51.100.77")) != v
    other = VisitorHasher(None, PEPPER + "x", RETENTION)  # type: ignore[arg-type]
    assert other.visitor(salt, ip("198.51.100.77")) != v
    # The same text as an address and as a user agent gives different pseudonyms.
    assert hasher.pseudonym(salt, "ua", "198.51.100.77") != v
    # IPv6: one /64, one visitor.
    a = hasher.visitor(salt, ip("2001:db8:abcd:12::1"))
    assert a == hasher.visitor(salt, ip("2001:db8:abcd:12:ffff:ffff:ffff:ffff"))
    assert a != hasher.visitor(salt, ip("2001:db8:abcd:13::1"))


def test_networks_get_their_own_keyed_pseudonyms() -> None:
    salt = Salt(5, b"s" * 32)
    hasher = VisitorHasher(None, PEPPER, RETENTION)  # type: ignore[arg-type]
    networks = load_policies().limits.networks
    v6 = hasher.networks(salt, ip("2001:db8:77:1234::1"), networks)
    assert [n.prefix for n in v6] == [56, 48]  # narrowest first
    assert all(re.fullmatch(r"[0-9a-f]{32}", n.pseudonym) for n in v6)
    # Same /48, another /56: the /48's pseudonym is shared, the /56's is not.
    other = hasher.networks(salt, ip("2001:db8:77:ff00::1"), networks)
    assert other[1].pseudonym == v6[1].pseudonym and other[0].pseudonym != v6[0].pseudonym
    # A network's pseudonym is never a visitor's (its own kind), nor the same across salts.
    assert v6[0].pseudonym != hasher.pseudonym(salt, "ip", "2001:db8:77:1200::/56")
    assert hasher.networks(Salt(6, b"t" * 32), ip("2001:db8:77:1234::1"), networks) != v6
    v4 = hasher.networks(salt, ip("198.51.100.77"), networks)
    assert [n.prefix for n in v4] == [24]
    assert hasher.networks(salt, ip("2002:c633:644d::1"), networks) == v4  # its 6to4 form


async def test_processes_agree_on_one_salt_kept_within_retention(
    aredis: Redis, redis_client: redis.Redis
) -> None:
    # Several token-server processes start at once: one salt wins, all use it.
    hashers = [VisitorHasher(aredis, PEPPER, RETENTION) for _ in range(8)]
    now = 1_900_000_000.0
    salts = await asyncio.gather(*(h.current_salt(now) for h in hashers))
    assert len({s.value for s in salts}) == 1
    assert len({s.period for s in salts}) == 1
    assert len(salts[0].value) == 32
    stored = list(redis_client.scan_iter(match=keys.salt(0)[:-1] + "*"))
    assert stored == [keys.salt(salts[0].period).encode()]
    assert redis_client.get(stored[0]) == salts[0].value
    # The salt expires at the end of its period plus the longest retention, by absolute
    # time; it is never kept beyond the privacy policy's maximum from its period's start.
    expire_at = redis_client.expiretime(stored[0])
    period_start = salts[0].period * RETENTION.salt_period_s
    longest = max(RETENTION.session_ttl_s, RETENTION.pseudonym_ttl_s)
    assert expire_at == period_start + RETENTION.salt_period_s + longest
    assert expire_at - period_start <= PRIVACY_MAX_DAYS * DAY_S


async def test_salt_rotates_with_the_period(aredis: Redis) -> None:
    hasher = VisitorHasher(aredis, PEPPER, RETENTION)
    start = 1_900_000_000.0
    first = await hasher.current_salt(start)
    later = await hasher.current_salt(start + RETENTION.salt_period_s)
    assert later.period == first.period + 1
    assert later.value != first.value
    assert hasher.visitor(first, ip("198.51.100.77")) != hasher.visitor(later, ip("198.51.100.77"))
    assert [s.period for s in await hasher.live_salts()] == [first.period, later.period]


async def test_a_lost_salt_is_reasserted_and_processes_converge(
    aredis: Redis, redis_client: redis.Redis
) -> None:
    now = 1_900_000_000.0
    one = VisitorHasher(aredis, PEPPER, RETENTION)
    salt = await one.current_salt(now)
    redis_client.flushdb()  # Redis restarted without persistence
    # Within the recheck delay the cached salt is used without a round trip...
    assert (await one.current_salt(now + 1)).value == salt.value
    assert redis_client.dbsize() == 0
    # ...after it, the process writes its salt back (first writer wins) and a fresh
    # process learns that one instead of inventing its own.
    assert (await one.current_salt(now + SALT_RECHECK_S + 1)).value == salt.value
    assert redis_client.get(keys.salt(salt.period)) == salt.value
    fresh = VisitorHasher(aredis, PEPPER, RETENTION)
    assert (await fresh.current_salt(now + SALT_RECHECK_S + 2)).value == salt.value


@pytest.mark.parametrize(
    ("user_agent", "browser", "os", "device"),
    [
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
            " Chrome/124.0.0.0 Safari/537.36",
            "Chrome",
            "Windows",
            "desktop",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15"
            " (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
            "Mobile Safari",
            "iOS",
            "mobile",
        ),
        (
            "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15"
            " (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
            "Mobile Safari",
            "iOS",
            "tablet",
        ),
        (
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Other",
            "Other",
            "bot",
        ),
        # Client-written names are never stored: only families on the policy's list.
        ("Mozilla/5.0 (compatible; jdupont-scraper/1.0)", "Other", "Other", "bot"),
        ("JeanDupontApp/1.0 CFNetwork/1410.0.3 Darwin/22.6.0", "Other", "iOS", "mobile"),
        ("", "none", "none", "other"),
    ],
)
def test_user_agent_family_is_coarse(user_agent: str, browser: str, os: str, device: str) -> None:
    family = ua_family(user_agent)
    assert (family.browser, family.os, family.device) == (browser, os, device)
    # No version numbers: the family alone must not narrow a visitor down.
    assert not re.search(r"\d", family.label())
