"""Exactness under concurrency: simultaneous requests over two token-server processes
sharing one Redis mint exactly what the limits allow, no more, no less.

One policy copy serves all three bursts, chosen so that a different limit binds in each:
  visitor: sessions_per_hour 7, minutes_per_day 32 (1920 s), concurrency out of the way
  global:  concurrent_sessions 13
- one visitor asking for after-hours-en (240 s): the hour binds at 7 (minutes would allow 8);
- one visitor asking for agence-immo-fr (300 s): minutes bind at floor(1920/300) = 6;
- many visitors, one request each: the global concurrency binds at 13.
The refusal reasons are read back from the admission script's own statistics, so a burst
that stopped for the wrong reason fails even when the count happens to match. The shipped
automatic defence (policies/ops.yaml) stays on: a flooding visitor is soon blocked (403),
which must not change how many tokens were minted.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from redisdb import keys
from tests.server.support import (
    away_from_bucket_edge,
    burst,
    error_codes,
    redis_now,
    roomy_caps,
    running_servers,
    session_record,
    settings_env,
    status_counts,
)
from tests.support import ServerProcess, write_policies

PER_HOUR = 7
MINUTES_PER_DAY = 32
GLOBAL_CONCURRENT = 13
REQUESTS = 240


@pytest.fixture(scope="module")
def servers(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Any]]:
    # Unjoined-token caps and prefix aggregates out of the way (these tokens are never
    # used; their exactness: tests/policies/test_admission_networks.py and
    # tests/policies/test_admission_unjoined.py).
    policies = write_policies(
        tmp_path_factory.mktemp("policies"),
        limits=roomy_caps({
            "visitor": {"concurrent_sessions": 1000, "sessions_per_hour": PER_HOUR,
                        "sessions_per_day": 15, "minutes_per_day": MINUTES_PER_DAY},
            "global": {"concurrent_sessions": GLOBAL_CONCURRENT, "minutes_per_day": 100_000},
        }),
    )  # fmt: skip
    # Exactness, not latency, is under test: a generous Redis timeout keeps a loaded CI
    # machine from turning slow answers into 503s (test_redis_outage covers the timeout).
    env = settings_env(
        redis_url,
        POLICIES_DIR=str(policies),
        TRUSTED_PROXIES="127.0.0.1/32",
        REDIS_TIMEOUT_S="5",
    )
    with running_servers([env, env]) as started:
        yield started


def spread(servers: list[ServerProcess], headers: Iterator[dict[str, str]]) -> list[Any]:
    """REQUESTS requests, alternating between the server processes."""
    urls = itertools.cycle(s.base_url + "/api/token" for s in servers)
    return [(next(urls), next(headers)) for _ in range(REQUESTS)]


def stats(client: redis.Redis) -> dict[str, int]:
    hour = int(redis_now(client) // 3600)
    raw: Any = client.hgetall(keys.stats(hour))
    return {k.decode(): int(v) for k, v in raw.items()}


def minted(responses: list[Any], client: redis.Redis) -> list[dict[str, str]]:
    records = [
        session_record(client, r.json()["session_id"]) for r in responses if r.status_code == 201
    ]
    assert all(records), "a 201 without its session record"
    return records


def assert_refused_as_one_flooding_visitor(responses: list[Any], admitted: int) -> None:
    """Every request past the limit is refused: 429, or 403 once the automatic defence
    (policies/ops.yaml auto_block) has blocked the flooding visitor."""
    codes = error_codes(responses)
    assert set(codes) <= {"rate_limited", "blocked"}, codes
    assert codes["rate_limited"] >= 1
    assert sum(codes.values()) == REQUESTS - admitted


def assert_refusal_reasons(counted: dict[str, int], limit: str, refused: int) -> None:
    """The admission script's own account: the expected limit bound (then the block)."""
    reasons = {k: v for k, v in counted.items() if k.startswith("refused:")}
    assert set(reasons) <= {f"refused:{limit}", "refused:blocked"}, reasons
    assert reasons[f"refused:{limit}"] >= 1
    assert sum(reasons.values()) == refused


def prepare(client: redis.Redis) -> None:
    away_from_bucket_edge(client, 3600)
    away_from_bucket_edge(client, 86_400)


async def test_one_visitor_gets_exactly_the_hourly_limit(
    servers: list[ServerProcess], redis_client: redis.Redis
) -> None:
    prepare(redis_client)
    one_visitor = itertools.repeat({"X-Forwarded-For": "203.0.113.50"})
    responses = await burst(spread(servers, one_visitor), {"agent": "after-hours-en"})

    assert status_counts(responses)[201] == PER_HOUR
    assert_refused_as_one_flooding_visitor(responses, PER_HOUR)
    assert all(int(r.headers["retry-after"]) > 0 for r in responses if r.status_code == 429)
    records = minted(responses, redis_client)
    assert len({r["visitor"] for r in records}) == 1
    assert len(list(redis_client.scan_iter(match=keys.session("*")))) == PER_HOUR
    assert redis_client.zcard(keys.global_active()) == PER_HOUR
    counted = stats(redis_client)
    assert counted["issued"] == PER_HOUR
    assert_refusal_reasons(counted, "visitor_hourly", REQUESTS - PER_HOUR)


async def test_one_visitor_gets_exactly_the_daily_minutes(
    servers: list[ServerProcess], redis_client: redis.Redis
) -> None:
    prepare(redis_client)
    allowed = MINUTES_PER_DAY * 60 // 300
    assert allowed < PER_HOUR  # minutes, not the hour, must be what binds here
    one_visitor = itertools.repeat({"X-Forwarded-For": "203.0.113.51"})
    responses = await burst(spread(servers, one_visitor), {"agent": "agence-immo-fr"})

    assert status_counts(responses)[201] == allowed
    assert_refused_as_one_flooding_visitor(responses, allowed)
    records = minted(responses, redis_client)
    visitor = records[0]["visitor"]
    day = int(redis_now(redis_client) // 86_400)
    reserved = redis_client.get(f"{keys.PREFIX}{keys.VISITOR_SECONDS}:{visitor}:{day}")
    assert reserved is not None and int(reserved) == allowed * 300
    counted = stats(redis_client)
    assert counted["issued"] == allowed
    assert_refusal_reasons(counted, "visitor_minutes", REQUESTS - allowed)


async def test_many_visitors_get_exactly_the_global_concurrency(
    servers: list[ServerProcess], redis_client: redis.Redis
) -> None:
    prepare(redis_client)
    distinct = ({"X-Forwarded-For": f"198.18.{i // 250}.{i % 250 + 1}"} for i in itertools.count())
    responses = await burst(spread(servers, distinct), {"agent": "realty-desk-en"})

    assert status_counts(responses) == {201: GLOBAL_CONCURRENT, 503: REQUESTS - GLOBAL_CONCURRENT}
    assert error_codes(responses) == {"capacity": REQUESTS - GLOBAL_CONCURRENT}
    for response in responses:
        if response.status_code == 503:
            assert int(response.headers["retry-after"]) > 0
            assert "participant_token" not in json.loads(response.content)
    records = minted(responses, redis_client)
    assert len({r["visitor"] for r in records}) == GLOBAL_CONCURRENT
    assert redis_client.zcard(keys.global_active()) == GLOBAL_CONCURRENT
    counted = stats(redis_client)
    assert counted["issued"] == GLOBAL_CONCURRENT
    assert counted["refused:global_concurrent"] == REQUESTS - GLOBAL_CONCURRENT
