"""Unused tokens: capped per visitor, per network and for everyone; a slot is held only for
the join window until the worker claims the session, then for the call; whatever closes a
session (worker, webhook, sweeper) frees every slot it held.

A real token-server process behind a "proxy" (X-Forwarded-For names the visitor), a real
Redis; the worker's claim and release are the scripts the worker runs (policies/claim.py,
Admission.release), the webhook is a signed LiveKit event to the server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from redis.asyncio import Redis

from ops.context import build_context
from ops.reconcile import expire_unjoined
from policies import Policies, load_policies
from policies.admission import Admission
from policies.claim import Claims
from redisdb import keys
from redisdb.connection import connect
from server.settings import Settings
from tests.ops.support import post_event, room_finished
from tests.server.support import redis_now, session_record, settings_env
from tests.support import ServerProcess, write_policies

AGENT = {"agent": "agence-immo-fr"}  # 300 s
LIMITS = {
    "visitor": {"concurrent_sessions": 5, "unjoined_tokens": 2, "sessions_per_hour": 50,
                "sessions_per_day": 50},
    "global": {"concurrent_sessions": 50, "unjoined_tokens": 6},
    "networks": {"ipv4": {24: {"concurrent_sessions": 50, "sessions_per_hour": 50,
                               "sessions_per_day": 50, "unjoined_tokens": 3}}},
}  # fmt: skip


@pytest.fixture(scope="module")
def policies_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_policies(tmp_path_factory.mktemp("policies"), limits=LIMITS)


@pytest.fixture(scope="module")
def server(redis_url: str, policies_dir: Path) -> Iterator[ServerProcess]:
    env = settings_env(redis_url, POLICIES_DIR=str(policies_dir), TRUSTED_PROXIES="127.0.0.1/32")
    process = ServerProcess(env=env).start()
    yield process
    process.stop()


@pytest.fixture
async def aredis(redis_url: str, redis_client: redis.Redis) -> AsyncIterator[Redis]:
    client = connect(redis_url, 5.0)
    yield client
    await client.aclose()


async def token(server: ServerProcess, address: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        return await client.post("/api/token", json=AGENT, headers={"X-Forwarded-For": address})


def reason(response: httpx.Response) -> str:
    return str(json.loads(response.content).get("reason"))


async def test_unjoined_tokens_are_capped_per_visitor(
    server: ServerProcess, aredis: Redis, policies_dir: Path
) -> None:
    claims = Claims(aredis, load_policies(policies_dir))
    first, second = [await token(server, "203.0.113.10") for _ in range(2)]
    assert (first.status_code, second.status_code) == (201, 201)
    third = await token(server, "203.0.113.10")
    # Concurrency would allow five: the two unused tokens are what stops the third.
    assert third.status_code == 429 and reason(third) == "visitor_unjoined"
    assert 0 < int(third.headers["retry-after"]) <= load_policies(policies_dir).admission_lease_s()
    # Someone joins with the first (the worker claims it): it is no longer unused.
    assert (await claims.claim(first.json()["session_id"], "AJ_1")).ours
    assert (await token(server, "203.0.113.10")).status_code == 201


async def test_unjoined_tokens_are_capped_per_network(
    server: ServerProcess, aredis: Redis, policies_dir: Path
) -> None:
    claims = Claims(aredis, load_policies(policies_dir))
    admitted = [await token(server, f"198.51.100.{n}") for n in (1, 2, 3)]
    assert [r.status_code for r in admitted] == [201, 201, 201]
    fourth = await token(server, "198.51.100.4")  # a fourth visitor of the same /24
    assert fourth.status_code == 429 and reason(fourth) == "network_unjoined"
    assert (await token(server, "198.51.101.4")).status_code == 201  # the next /24
    assert (await claims.claim(admitted[0].json()["session_id"], "AJ_2")).ours
    assert (await token(server, "198.51.100.4")).status_code == 201


async def test_unjoined_tokens_are_capped_for_everyone(
    server: ServerProcess, aredis: Redis, policies_dir: Path
) -> None:
    claims = Claims(aredis, load_policies(policies_dir))
    admitted = [await token(server, f"192.0.{n}.1") for n in range(6)]
    assert all(r.status_code == 201 for r in admitted)
    seventh = await token(server, "192.0.77.1")
    # The whole demo's share of unused tokens: a capacity answer, never held against anyone.
    assert seventh.status_code == 503 and reason(seventh) == "global_unjoined"
    assert json.loads(seventh.content)["error"] == "capacity"
    assert (await claims.claim(admitted[0].json()["session_id"], "AJ_3")).ours
    assert (await token(server, "192.0.77.1")).status_code == 201


def lease_keys(record: dict[str, str]) -> list[str]:
    nets = record["nets"].split()
    return [keys.visitor_active(record["visitor"]), keys.global_active(),
            *(keys.network_active(n) for n in nets)]  # fmt: skip


def unjoined_keys(record: dict[str, str]) -> list[str]:
    nets = record["nets"].split()
    return [keys.visitor_unjoined(record["visitor"]), keys.global_unjoined(),
            *(keys.network_unjoined(n) for n in nets)]  # fmt: skip


async def test_a_slot_is_held_for_the_join_window_until_claimed_then_for_the_call(
    server: ServerProcess, aredis: Redis, redis_client: redis.Redis, policies_dir: Path
) -> None:
    policies = load_policies(policies_dir)
    session = policies.limits.session
    response = await token(server, "203.0.113.20")
    session_id = response.json()["session_id"]
    record = session_record(redis_client, session_id)
    issued = float(record["issued_at"])
    window_end = issued + session.join_window_s + session.lease_margin_s
    assert float(record["lease_expires_at"]) == pytest.approx(window_end, abs=0.01)
    # Every slot (the visitor's, its /24's, everyone's) until the join deadline only, not
    # for a whole call nobody may ever make.
    for key in lease_keys(record):
        assert redis_client.zscore(key, session_id) == pytest.approx(window_end, abs=0.01), key
        assert redis_client.ttl(key) <= session.join_window_s + session.lease_margin_s + 1
    for key in unjoined_keys(record):
        assert redis_client.zscore(key, session_id) == pytest.approx(window_end, abs=0.01), key

    assert (await Claims(aredis, policies).claim(session_id, "AJ_call")).ours
    claimed = session_record(redis_client, session_id)
    call_end = float(claimed["claimed_at"]) + 300 + session.lease_margin_s
    assert float(claimed["lease_expires_at"]) == pytest.approx(call_end, abs=0.01)
    for key in lease_keys(record):
        assert redis_client.zscore(key, session_id) == pytest.approx(call_end, abs=0.01), key
        assert redis_client.ttl(key) >= 300 + session.lease_margin_s - 5
    for key in unjoined_keys(record):
        assert redis_client.zscore(key, session_id) is None, key


def short_window(tmp: Path) -> Path:
    """The shipped policies (one call at a time) with the shortest join window the policy
    allows and no margin: a token's slot is its for 10 s unless claimed."""
    return write_policies(tmp, limits={"session": {"join_window_s": 10, "lease_margin_s": 0}})


def held_anywhere(client: redis.Redis, record: dict[str, str], session_id: str) -> list[str]:
    return [k for k in (*lease_keys(record), *unjoined_keys(record))
            if client.zscore(k, session_id) is not None]  # fmt: skip


def reserved(client: redis.Redis, visitor: str) -> tuple[int, int]:
    day = int(redis_now(client) // 86_400)
    mine = client.get(keys.visitor_bucket(keys.VISITOR_SECONDS, visitor, day))
    return int(mine or 0), int(client.get(keys.global_seconds(day)) or 0)


async def test_an_unused_token_frees_its_slot_after_the_window_and_the_sweeper_closes_it(
    redis_url: str, redis_client: redis.Redis, aredis: Redis, tmp_path: Path
) -> None:
    directory = short_window(tmp_path)
    env = settings_env(redis_url, POLICIES_DIR=str(directory), TRUSTED_PROXIES="127.0.0.1/32")
    process = ServerProcess(env=env).start()
    try:
        first = await token(process, "203.0.113.30")
        assert first.status_code == 201
        assert (await token(process, "203.0.113.30")).status_code == 429
        await asyncio.sleep(10.5)  # the join window, on Redis' clock; nobody joined
        # The slot came back with the window, not after a whole call's length.
        again = await token(process, "203.0.113.30")
        assert again.status_code == 201, again.text
    finally:
        process.stop()

    session_id = first.json()["session_id"]
    record = session_record(redis_client, session_id)
    assert record["status"] == "issued"
    # The global unjoined index still names it (admission never prunes it): the sweeper
    # finds it there, closes it and refunds its minutes.
    assert redis_client.zscore(keys.global_unjoined(), session_id) is not None
    assert reserved(redis_client, record["visitor"]) == (600, 600)
    policies: Policies = load_policies(directory)
    ctx = build_context(
        Settings(_env_file=None, policies_dir=directory),  # type: ignore[call-arg]
        redis=aredis,
        policies=policies,
    )
    assert await expire_unjoined(ctx) == [session_id]
    closed = session_record(redis_client, session_id)
    assert (closed["status"], closed["release_reason"]) == ("never_joined", "never_joined")
    assert reserved(redis_client, record["visitor"]) == (300, 300)
    assert held_anywhere(redis_client, record, session_id) == []
    assert await expire_unjoined(ctx) == []  # once


async def test_every_close_frees_every_slot(
    server: ServerProcess, aredis: Redis, redis_client: redis.Redis, policies_dir: Path
) -> None:
    policies = load_policies(policies_dir)
    # The worker: claims, and releases at the end of the call.
    call = (await token(server, "203.0.113.40")).json()["session_id"]
    record = session_record(redis_client, call)
    assert (await Claims(aredis, policies).claim(call, "AJ_end")).ours
    assert (await Admission(aredis, policies).release(call, 42, "user_hangup")).released
    assert held_anywhere(redis_client, record, call) == []

    # LiveKit's webhook: the room finished and nobody (no worker) closed the session,
    # claimed or not.
    for address, claim in (("203.0.113.41", True), ("203.0.113.42", False)):
        session_id = (await token(server, address)).json()["session_id"]
        record = session_record(redis_client, session_id)
        if claim:
            assert (await Claims(aredis, policies).claim(session_id, "AJ_lost")).ours
        delivered = post_event(server.base_url, room_finished(session_id))
        assert delivered.json()["outcome"] == "abandoned", delivered.text
        assert held_anywhere(redis_client, record, session_id) == [], address
        assert session_record(redis_client, session_id)["status"] == "abandoned"
