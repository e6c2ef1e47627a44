"""Prefix aggregates: rotating through the /64s of one allocation, or through the IPv6 forms
of one IPv4 address, gets no more than the allocation's (or the address's) share.

Two real token-server processes behind a "proxy" (TRUSTED_PROXIES=127.0.0.1/32: the
X-Forwarded-For header says who the visitor is), one real Redis; every burst is fired at
once over both processes, so the aggregates are exact under concurrency too.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from policies import load_policies
from policies.claim import Claims
from redisdb import keys
from redisdb.connection import connect
from tests.ops.support import run_ops
from tests.server.support import (
    burst,
    error_codes,
    running_servers,
    session_record,
    settings_env,
    status_counts,
)
from tests.support import ServerProcess, write_policies

AGENT = {"agent": "agence-immo-fr"}
# Explicit here (the shipped values may be tuned): the /56 allows 2 at once, the /48 3.
NETWORKS = {
    "ipv6": {
        56: {"concurrent_sessions": 2, "sessions_per_hour": 50, "sessions_per_day": 50,
             "unjoined_tokens": 2},
        48: {"concurrent_sessions": 3, "sessions_per_hour": 50, "sessions_per_day": 50,
             "unjoined_tokens": 3},
    },
    "ipv4": {
        24: {"concurrent_sessions": 3, "sessions_per_hour": 50, "sessions_per_day": 50,
             "unjoined_tokens": 3},
    },
}  # fmt: skip


def start(redis_url: str, directory: Path, limits: dict[str, Any] | None) -> Any:
    policies = write_policies(directory, limits=limits)
    env = settings_env(
        redis_url, POLICIES_DIR=str(policies), TRUSTED_PROXIES="127.0.0.1/32", REDIS_TIMEOUT_S="5"
    )
    return running_servers([env, env]), env


@pytest.fixture(scope="module")
def servers(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[ServerProcess], dict[str, str]]]:
    limits = {"global": {"unjoined_tokens": 100, "concurrent_sessions": 100},
              "networks": NETWORKS}  # fmt: skip
    running, env = start(redis_url, tmp_path_factory.mktemp("policies"), limits)
    with running as started:
        yield started, env


@pytest.fixture(scope="module")
def shipped(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[ServerProcess], dict[str, str]]]:
    running, env = start(redis_url, tmp_path_factory.mktemp("shipped"), None)
    with running as started:
        yield started, env


def requests(servers: list[ServerProcess], addresses: list[str]) -> list[tuple[str, Any]]:
    urls = itertools.cycle(s.base_url + "/api/token" for s in servers)
    return [(next(urls), {"X-Forwarded-For": a}) for a in addresses]


def reasons(responses: list[Any]) -> dict[str, int]:
    counted: dict[str, int] = {}
    for response in responses:
        if response.status_code >= 400:
            reason = json.loads(response.content).get("reason", "")
            counted[reason] = counted.get(reason, 0) + 1
    return counted


async def test_the_64s_of_one_48_share_its_limits(
    servers: tuple[list[ServerProcess], dict[str, str]], redis_client: redis.Redis
) -> None:
    started, _ = servers
    # Eight /64s, each in its own /56, all in 2001:db8:77::/48: eight visitors, one /48.
    rotating = [f"2001:db8:77:{n:02x}00::1" for n in range(8)]
    responses = await burst(requests(started, rotating), AGENT)
    assert status_counts(responses) == {201: 3, 429: 5}
    assert reasons(responses) == {"network_concurrent": 5}
    assert error_codes(responses) == {"rate_limited": 5}
    visitors = {
        session_record(redis_client, r.json()["session_id"])["visitor"]
        for r in responses
        if r.status_code == 201
    }
    assert len(visitors) == 3  # three different visitors, stopped by their shared /48

    # Four /64s of one /56 (in another /48): the /56 binds first, at 2.
    same_56 = [f"2001:db8:78:1{n}::1" for n in range(4)]
    responses = await burst(requests(started, same_56), AGENT)
    assert status_counts(responses) == {201: 2, 429: 2}
    assert reasons(responses) == {"network_concurrent": 2}

    # Someone in another /48, and IPv4 visitors: not affected.
    for other in ("2001:db8:79::1", "192.0.2.10", "198.51.100.10"):
        response = (await burst(requests(started, [other]), AGENT))[0]
        assert response.status_code == 201, (other, response.text)


async def test_the_ipv6_forms_of_one_ipv4_are_that_ipv4(
    servers: tuple[list[ServerProcess], dict[str, str]], redis_client: redis.Redis
) -> None:
    started, _ = servers
    ipv4 = ipaddress.IPv4Address("198.51.100.20")
    first = (await burst(requests(started, [str(ipv4)]), AGENT))[0]
    assert first.status_code == 201
    visitor = session_record(redis_client, first.json()["session_id"])["visitor"]
    packed = int(ipv4)
    forms = [
        f"::ffff:{ipv4}",  # IPv4-mapped
        f"64:ff9b::{ipv4}",  # NAT64 (well-known prefix)
        str(ipaddress.IPv6Address((0x2002 << 112) | (packed << 80) | 1)),  # 6to4
        # Other /64s of the same IPv4's 6to4 /48: each its own visitor before.
        *(str(ipaddress.IPv6Address((0x2002 << 112) | (packed << 80) | (n << 64) | 1))
          for n in range(1, 7)),
    ]  # fmt: skip
    responses = await burst(requests(started, forms), AGENT)
    assert status_counts(responses) == {429: len(forms)}
    assert reasons(responses) == {"visitor_concurrent": len(forms)}
    # Every refusal was counted against the IPv4's one pseudonym.
    refused = {k.decode().split(":")[2] for k in redis_client.scan_iter(match="{ocf}:vr:*")}
    assert refused == {visitor}


async def test_twenty_unused_tokens_from_one_48_leave_the_demo_to_others(
    shipped: tuple[list[ServerProcess], dict[str, str]], redis_client: redis.Redis, redis_url: str
) -> None:
    """The reported attack, with the shipped limits: twenty /64s of one /48 ask for a token
    and never join. Real visitors elsewhere still get theirs (and join: the worker claims
    their sessions, as it does within a second)."""
    started, _ = shipped
    policies = load_policies()
    attack = [f"2001:db8:66:{n:02x}00::{n + 1}" for n in range(20)]
    responses = await burst(requests(started, attack), AGENT)
    admitted = status_counts(responses).get(201, 0)
    # Each /64 in its own /56: the /48 is what they share.
    per_48 = policies.limits.networks.ipv6[48]
    share = min(per_48.concurrent_sessions, per_48.unjoined_tokens)
    assert admitted == share < policies.limits.global_.concurrent_sessions
    assert set(reasons(responses)) <= {"network_concurrent", "network_unjoined"}

    client = connect(redis_url, 5.0)
    claims = Claims(client, policies)
    try:
        for n in range(12):  # more than the global concurrency less the attacker's share
            address = f"2001:db8:{0x100 + n:x}::1" if n % 2 else f"203.0.{113 + n}.7"
            response = (await burst(requests(started, [address]), AGENT))[0]
            assert response.status_code == 201, (address, response.text)
            assert (await claims.claim(response.json()["session_id"], f"AJ_{n}")).ours
    finally:
        await client.aclose()


async def test_network_keys_are_pseudonyms_with_their_ttls(
    servers: tuple[list[ServerProcess], dict[str, str]], redis_client: redis.Redis
) -> None:
    started, env = servers
    responses = await burst(requests(started, ["2001:db8:4f2a:77c1::1", "203.0.113.77"]), AGENT)
    assert status_counts(responses) == {201: 2}
    kinds = (keys.NETWORK_ACTIVE, keys.NETWORK_UNJOINED, keys.NETWORK_HOUR, keys.NETWORK_DAY)
    found = {kind: list(redis_client.scan_iter(match=keys.pattern(kind))) for kind in kinds}
    # A /56 and a /48 for the IPv6 visitor, a /24 for the IPv4 one.
    assert all(len(names) == 3 for names in found.values()), found
    for names in found.values():
        for name in names:
            pseudonym = name.decode().split(":")[2]
            assert len(pseudonym) == 32 and int(pseudonym, 16) >= 0
            assert redis_client.ttl(name) > 0
    # The retention audit knows every new kind and finds each within its bound.
    done = run_ops(env, "audit", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True
    assert {*kinds, keys.VISITOR_UNJOINED, keys.GLOBAL_UNJOINED} <= set(report["kinds"])
