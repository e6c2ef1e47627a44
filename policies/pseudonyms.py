"""Visitor pseudonyms: keyed hashes of an address or user agent, never the value itself.

pseudonym = HMAC-SHA256(pepper, kind | period | salt | value), truncated to 128 bits.
The pepper (VISITOR_HASH_SECRET) never leaves the process; the salt is random per period
and lives in Redis only as long as the retention policy allows, so when it expires the
old pseudonyms can no longer be linked to any address, even by us.

The wider networks an address belongs to (the prefix aggregates of limits.yaml) get
pseudonyms the same way, under their own kind: admission counts them like visitors.

A salt rotation must not lift a block (a block may last up to `blocks.max_days`, the salt
period at most): a visitor's pseudonym also carries the same address's pseudonym under the
previous period's salt, which Redis keeps anyway for access and erasure, and admission
checks a block under either. Nothing new is stored to link the two.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml
from redis.asyncio import Redis
from ua_parser import parse as parse_ua

from policies.client_address import IPAddress, carried_ipv4
from policies.clock import redis_clock
from policies.model import NetworkAggregates, NetworkLimits, Retention
from policies.replies import text
from redisdb import keys

# How often a process re-asserts its cached salt in Redis: if Redis lost its data, every
# process converges on one salt again within this delay (first writer wins).
SALT_RECHECK_S = 60.0
PSEUDONYM_HEX = 32
# User-agent families remembered per process. Only admitted requests add to it (the
# refusal path never parses), so a flood of invented user agents cannot evict real ones.
UA_FAMILY_CACHE_SIZE = 4096
_FINGERPRINT_MESSAGE = b"onecallflow visitor-hash-secret fingerprint v1"
_HERE = Path(__file__).resolve().parent


def normalise_ip(address: IPAddress) -> str:
    """An address that carries an IPv4 one is that IPv4 (client_address.carried_ipv4);
    other IPv6 addresses are reduced to their /64 (one subscriber's network)."""
    address = carried_ipv4(address)
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False).network_address) + "/64"
    return str(address)


@dataclass(frozen=True)
class NetworkLevel:
    prefix: int
    limits: NetworkLimits
    network: str  # the network's text: hashed at once, held only in this request's memory


@dataclass(frozen=True)
class NetworkId:
    """A prefix aggregate's pseudonym, with the limits that apply to it."""

    pseudonym: str
    prefix: int
    limits: NetworkLimits


def aggregate_networks(address: IPAddress, networks: NetworkAggregates) -> list[NetworkLevel]:
    """The wider networks the address belongs to, one per configured prefix aggregate
    (narrowest first), as text to hash (never stored as such): the IP version, the prefix
    length and the network's bits in hex ("v6/48/20010db80077" for 2001:db8:77::/48).
    Integer arithmetic: building ipaddress network objects on every token request was a
    measurable share of the token path (docs/benchmarks.md)."""
    address = carried_ipv4(address)
    value, width = int(address), address.max_prefixlen
    return [
        NetworkLevel(prefix, limits, f"v{address.version}/{prefix}/{value >> (width - prefix):x}")
        for prefix, limits in networks.levels(address.version)
    ]


@dataclass(frozen=True)
class UAFamily:
    browser: str
    os: str
    device: str  # desktop | mobile | tablet | bot | other

    def label(self) -> str:
        return f"{self.browser}/{self.os}/{self.device}"


_MOBILE_OS = {"iOS", "iPadOS", "Android", "Windows Phone", "KaiOS", "HarmonyOS"}
_DESKTOP_OS = {
    "Windows", "Mac OS X", "macOS", "Linux", "Ubuntu", "Chrome OS", "Fedora", "Debian",
    "FreeBSD", "OpenBSD",
}  # fmt: skip
_TABLET_DEVICES = {"iPad", "Generic Tablet", "Kindle"}


@lru_cache(maxsize=1)
def _allowed_families() -> tuple[frozenset[str], frozenset[str]]:
    data = yaml.safe_load((_HERE / "ua_families.yaml").read_text(encoding="utf-8"))
    return frozenset(data["browsers"]), frozenset(data["operating_systems"])


# Keyed by a digest: the cache holds no user agent, and a 500-character one costs a
# microsecond to look up instead of the parser's milliseconds.
_FAMILIES: OrderedDict[bytes, UAFamily] = OrderedDict()


def _family_key(user_agent: str) -> bytes:
    return hashlib.blake2b(user_agent.encode("utf-8", "replace"), digest_size=16).digest()


def known_ua_family(user_agent: str) -> UAFamily | None:
    """The family of a user agent parsed before, or None; never parses (cheap enough for
    the refusal path, which a flood of invented user agents goes through)."""
    key = _family_key(user_agent)
    family = _FAMILIES.get(key)
    if family is not None:
        _FAMILIES.move_to_end(key)
    return family


def ua_family(user_agent: str) -> UAFamily:
    """Coarse family from ua-parser (browser, OS, device class); no version numbers and
    no free text: names outside policies/ua_families.yaml become "Other". Remembered
    (known_ua_family) so a returning browser is not parsed again."""
    known = known_ua_family(user_agent)
    if known is not None:
        return known
    family = _parse_family(user_agent)
    _FAMILIES[_family_key(user_agent)] = family
    if len(_FAMILIES) > UA_FAMILY_CACHE_SIZE:
        _FAMILIES.popitem(last=False)
    return family


def _parse_family(user_agent: str) -> UAFamily:
    if not user_agent:
        return UAFamily("none", "none", "other")
    browsers, systems = _allowed_families()
    parsed = parse_ua(user_agent[:512])
    browser = parsed.user_agent.family if parsed.user_agent else "Other"
    os_family = parsed.os.family if parsed.os else "Other"
    device = parsed.device.family if parsed.device else "Other"
    if device == "Spider":
        kind = "bot"
    elif device in _TABLET_DEVICES or device.endswith("Tablet"):
        kind = "tablet"
    elif os_family in _MOBILE_OS:
        kind = "mobile"
    elif os_family in _DESKTOP_OS:
        kind = "desktop"
    else:
        kind = "other"
    return UAFamily(
        browser if browser in browsers else "Other",
        os_family if os_family in systems else "Other",
        kind,
    )


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("latin-1")
    raise TypeError(f"unexpected salt value {type(value).__name__}")


def secret_fingerprint(pepper: str) -> str:
    """What Redis may hold to tell whether two processes use the same VISITOR_HASH_SECRET:
    an HMAC of a fixed message under the secret. HMAC is a pseudo-random function, so the
    fingerprint says nothing about the secret beyond "same or not"."""
    return hmac.new(pepper.encode(), _FINGERPRINT_MESSAGE, hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True)
class Salt:
    period: int
    value: bytes
    # The previous period's salt while Redis still has it (see VisitorId).
    previous: bytes | None = None


class VisitorId(str):
    """A visitor pseudonym (the string itself, under the current salt) that also knows the
    same address's pseudonym under the previous period's salt, or None. Admission checks
    a block under both, so a rotation does not lift it; the link lives only in this
    request's memory."""

    previous: str | None

    def __new__(cls, value: str, previous: str | None = None) -> VisitorId:
        self = super().__new__(cls, value)
        self.previous = previous
        return self


class VisitorHasher:
    def __init__(self, redis: Redis, pepper: str, retention: Retention) -> None:
        self._redis = redis
        self._pepper = pepper.encode()
        self._retention = retention
        self._fingerprint = secret_fingerprint(pepper)
        self._cache: dict[int, tuple[Salt, float]] = {}
        # The check in flight: for the present (None) or for a given period.
        self._fetching: tuple[int | None, asyncio.Future[Salt]] | None = None
        # Redis' clock minus ours, read at every salt check. Periods follow Redis' clock,
        # like admission's buckets: a process whose clock is off would otherwise hash
        # under another period's salt, and its visitors escape the counts made elsewhere.
        self._clock_offset: float | None = None

    def period_of(self, now: float) -> int:
        return int(now // self._retention.salt_period_s)

    def _expires_at(self, period: int) -> int:
        """A salt outlives its period by the longest retention, so every record made with
        it can still be found (access, erasure) until that record itself expires."""
        period_end = (period + 1) * self._retention.salt_period_s
        longest = max(self._retention.session_ttl_s, self._retention.pseudonym_ttl_s)
        return period_end + longest

    async def current_salt(self, now: float | None = None) -> Salt:
        """The salt of the period `now` falls in, by Redis' clock. By default the present:
        Redis' clock as read at the last salt check (at most SALT_RECHECK_S ago), plus the
        time since by ours."""
        estimate = now
        if estimate is None and self._clock_offset is not None:
            estimate = time.time() + self._clock_offset
        if estimate is not None:
            period = self.period_of(estimate)
            cached = self._cache.get(period)
            if cached and (estimate - cached[1] < SALT_RECHECK_S or self._fetching is not None):
                # Fresh, or being re-checked by another request: no round trip for this one.
                return cached[0]
        key = None if now is None else self.period_of(now)
        if self._fetching is None or self._fetching[0] != key:
            # Single flight: one request (re)checks the salt, concurrent ones wait for it,
            # so a cold process or a period change costs one check, not one each.
            future: asyncio.Future[Salt] = asyncio.get_running_loop().create_future()
            self._fetching = (key, future)
            try:
                salt = await self._check(now)
            except BaseException as exc:
                future.set_exception(exc)
                future.exception()  # consumed here; waiters re-raise their own copy
                raise
            else:
                future.set_result(salt)
            finally:
                self._fetching = None
            return salt
        return await asyncio.shield(self._fetching[1])

    async def _check(self, now: float | None) -> Salt:
        if now is None:
            # Redis' clock first: a host clock that drifted or jumped never picks the period.
            now = await redis_clock(self._redis)
            self._clock_offset = now - time.time()
        period = self.period_of(now)
        cached = self._cache.get(period)
        salt = await self._assert_salt(period, cached[0].value if cached else None)
        self._cache = {period: (salt, now)}
        return salt

    async def _assert_salt(self, period: int, known: bytes | None) -> Salt:
        candidate = known or secrets.token_bytes(32)
        # One round trip: create ours if none exists (first writer wins, also after Redis
        # lost its data), else learn the existing one; and read the previous period's salt,
        # never create it (no salt, no pseudonym made with it, nothing to check).
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(keys.salt(period), candidate, nx=True, get=True, exat=self._expires_at(period))
            pipe.get(keys.salt(period - 1))
            existing, previous = await pipe.execute()
        value = _as_bytes(existing) if existing is not None else candidate
        return Salt(period, value, _as_bytes(previous) if previous is not None else None)

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    async def assert_fingerprint(self) -> None:
        """Record that data made with this secret may exist, for as long as it may live
        (the longest retention from now); the token server calls this at start and every
        sweep, so the key lives while a server uses the secret, then expires with the
        data."""
        ttl = max(self._retention.session_ttl_s, self._retention.pseudonym_ttl_s)
        await self._redis.set(keys.pepper(self._fingerprint), "1", ex=ttl)

    async def live_salts(self) -> list[Salt]:
        """Every salt still in Redis: an address's pseudonyms under each of them cover all
        the data that may still be tied to it."""
        salts = []
        async for key in self._redis.scan_iter(match=keys.pattern(keys.SALT), count=100):
            raw_key = text(key)
            value = await self._redis.get(raw_key)
            if value is not None:
                salts.append(Salt(int(raw_key.rsplit(":", 1)[1]), _as_bytes(value)))
        return sorted(salts, key=lambda s: s.period)

    def pseudonym(self, salt: Salt, kind: str, value: str) -> str:
        message = b"|".join((kind.encode(), str(salt.period).encode(), salt.value, value.encode()))
        return hmac.new(self._pepper, message, hashlib.sha256).hexdigest()[:PSEUDONYM_HEX]

    def visitor(self, salt: Salt, address: IPAddress) -> VisitorId:
        value = normalise_ip(address)
        previous = None
        if salt.previous is not None:
            previous = self.pseudonym(Salt(salt.period - 1, salt.previous), "ip", value)
        return VisitorId(self.pseudonym(salt, "ip", value), previous)

    def networks(
        self, salt: Salt, address: IPAddress, networks: NetworkAggregates
    ) -> list[NetworkId]:
        """The address's prefix aggregates as pseudonyms: keyed and salted like a visitor's,
        under their own kind, so a network and an address never share a pseudonym."""
        return [
            NetworkId(self.pseudonym(salt, "net", level.network), level.prefix, level.limits)
            for level in aggregate_networks(address, networks)
        ]

    def user_agent(self, salt: Salt, user_agent: str) -> str:
        return self.pseudonym(salt, "ua", user_agent)
