"""A session is claimed exactly once (policies/claim.lua), in real Redis: issued -> started
by one job, the same job again is answered "yours", anyone else is told why not; a closed
record never goes back; the leases cover the call from the claim on; the never-joined
sweeper and claims racing each other leave exactly one winner."""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
from redis.asyncio import Redis

from ops.context import OpsContext, build_context
from ops.reconcile import expire_unjoined
from policies.admission import Admission
from policies.claim import CLAIM_FIELDS, ClaimAnswer, Claims
from redisdb import keys
from redisdb.connection import connect
from server.settings import Settings
from tests.server.support import session_record
from tests.voice.harness import POLICIES, admit_session

MARGIN = POLICIES.limits.session.lease_margin_s


@pytest.fixture
async def aredis(redis_url: str, redis_client: redis.Redis) -> AsyncIterator[Redis]:
    client = connect(redis_url, 2.0)
    yield client
    await client.aclose()


async def issued(client: Redis, max_s: int = 300) -> str:
    session_id = "claim-" + secrets.token_hex(8)
    await admit_session(client, "agence-immo-fr", session_id, max_s)
    return session_id


async def test_first_claim_starts_the_session_and_keeps_its_ttl(
    aredis: Redis, redis_client: redis.Redis
) -> None:
    session_id = await issued(aredis)
    before = session_record(redis_client, session_id)
    ttl_before = redis_client.ttl(keys.session(session_id))
    claims = Claims(aredis, POLICIES)

    claim = await claims.claim(session_id, "AJ_first")
    assert (claim.answer, claim.status, claim.ours) == (ClaimAnswer.CLAIMED, "started", True)
    after = session_record(redis_client, session_id)
    assert after["status"] == "started" and after["claimed_by"] == "AJ_first"
    assert abs(float(after["claimed_at"]) - time.time()) < 5  # Redis' clock, this machine
    # Only the claim's own fields changed; nothing else was added.
    assert set(after) - set(before) == {"claimed_by", "claimed_at"}
    assert {k for k in after if after[k] != before.get(k)} <= set(CLAIM_FIELDS)
    ttl_after = redis_client.ttl(keys.session(session_id))
    assert ttl_before - 5 <= ttl_after <= ttl_before

    # The same job again (the entrypoint after the request): yours, nothing changes.
    again = await claims.claim(session_id, "AJ_first")
    assert (again.answer, again.ours) == (ClaimAnswer.YOURS, True)
    assert session_record(redis_client, session_id) == after

    # Any other job: taken, with the reason; the record still names the first job.
    other = await claims.claim(session_id, "AJ_second")
    assert (other.answer, other.ours) == (ClaimAnswer.TAKEN, False)
    assert "another job" in other.why
    assert session_record(redis_client, session_id) == after


@pytest.mark.parametrize("status", ["ended", "abandoned", "never_joined"])
async def test_a_closed_session_is_never_claimed_and_never_goes_back(
    status: str, aredis: Redis, redis_client: redis.Redis
) -> None:
    session_id = await issued(aredis)
    claims = Claims(aredis, POLICIES)
    if status == "ended":  # a call that ran and ended: claimed first, then released
        assert (await claims.claim(session_id, "AJ_call")).ours
    released = await Admission(aredis, POLICIES).release(session_id, 30, status, {"status": status})
    assert released.released
    closed = session_record(redis_client, session_id)

    for job in ("AJ_call", "AJ_replay"):  # even the job that held it may not start again
        claim = await claims.claim(session_id, job)
        assert (claim.answer, claim.status, claim.ours) == (ClaimAnswer.CLOSED, status, False)
        assert claim.release_reason == status and status in claim.why
    assert session_record(redis_client, session_id) == closed
    assert redis_client.zscore(keys.global_active(), session_id) is None


async def test_unknown_session_is_refused_and_nothing_is_created(
    aredis: Redis, redis_client: redis.Redis
) -> None:
    claim = await Claims(aredis, POLICIES).claim("never-issued-0001", "AJ_x")
    assert (claim.answer, claim.ours) == (ClaimAnswer.UNKNOWN, False)
    assert redis_client.dbsize() == 0
    # An expired (or erased) record is the same: gone means unknown, and stays gone.
    session_id = await issued(aredis)
    redis_client.delete(keys.session(session_id))
    assert (await Claims(aredis, POLICIES).claim(session_id, "AJ_x")).answer == "unknown"
    assert redis_client.exists(keys.session(session_id)) == 0
    with pytest.raises(ValueError, match="job"):
        await Claims(aredis, POLICIES).claim(session_id, "")


async def test_claim_makes_the_leases_cover_the_call(
    aredis: Redis, redis_client: redis.Redis
) -> None:
    session_id = await issued(aredis, max_s=240)
    visitor = session_record(redis_client, session_id)["visitor"]
    lease_keys = (keys.visitor_active(visitor), keys.global_active())
    # A late join: the leases taken at mint run out in 10 s, and the visitor's was even
    # dropped (an admission sweeps expired leases), while the call may last 240 s more.
    soon = time.time() + 10
    redis_client.hset(keys.session(session_id), "lease_expires_at", f"{soon:.3f}")
    redis_client.zadd(keys.global_active(), {session_id: soon})
    redis_client.zrem(keys.visitor_active(visitor), session_id)
    for key in lease_keys:
        redis_client.zadd(key, {"other-session": soon})
        redis_client.expire(key, 20)

    assert (await Claims(aredis, POLICIES).claim(session_id, "AJ_late")).ours
    record = session_record(redis_client, session_id)
    expected = float(record["claimed_at"]) + 240 + MARGIN
    assert float(record["lease_expires_at"]) == pytest.approx(expected, abs=0.01)
    for key in lease_keys:
        assert redis_client.zscore(key, session_id) == pytest.approx(expected, abs=0.01)
        assert redis_client.ttl(key) >= 240 + MARGIN - 5
    # At least, never less: a lease already longer than the call's is left alone.
    fresh = await issued(aredis)
    far = round(time.time() + 5000, 3)
    redis_client.zadd(keys.global_active(), {fresh: far})
    redis_client.hset(keys.session(fresh), "lease_expires_at", f"{far:.3f}")
    assert (await Claims(aredis, POLICIES).claim(fresh, "AJ_fresh")).ours
    assert redis_client.zscore(keys.global_active(), fresh) == pytest.approx(far, abs=0.001)
    assert session_record(redis_client, fresh)["lease_expires_at"] == f"{far:.3f}"


async def test_sweeper_release_is_conditional_on_issued(
    aredis: Redis, redis_client: redis.Redis
) -> None:
    """What the sweeper does after reading `issued`, if a worker claimed in between: its
    release finds the status changed and leaves the live call alone."""
    session_id = await issued(aredis)
    assert (await Claims(aredis, POLICIES).claim(session_id, "AJ_live")).ours
    late = await Admission(aredis, POLICIES).release(
        session_id, 0, "never_joined", {"status": "never_joined"}, only_if_status="issued"
    )
    assert (late.released, late.detail) == (False, "status_changed")
    record = session_record(redis_client, session_id)
    assert record["status"] == "started" and "released_at" not in record
    assert redis_client.zscore(keys.global_active(), session_id) is not None


def ops_context(client: Redis) -> OpsContext:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    return build_context(settings, redis=client, policies=POLICIES)


# As many unclaimed sessions as the shipped global limits admit at once.
SESSIONS = min(POLICIES.limits.global_.concurrent_sessions, POLICIES.limits.global_.unjoined_tokens)
CLAIMERS = 4
SWEEPERS = 3


async def test_claims_racing_the_sweeper_leave_exactly_one_winner(
    redis_url: str, aredis: Redis, redis_client: redis.Redis
) -> None:
    session_ids = [await issued(aredis) for _ in range(SESSIONS)]
    # Every token is past its join window: the sweeper wants them all, workers too.
    past = time.time() + 3600
    claimers = [connect(redis_url, 5.0) for _ in range(CLAIMERS)]
    sweepers = [ops_context(connect(redis_url, 5.0)) for _ in range(SWEEPERS)]
    for client in (*claimers, *(ctx.redis for ctx in sweepers)):
        await client.ping()  # connected before the race, so neither side starts late
    rng = random.Random(7)

    async def claim(client: Redis, session_id: str, job: str) -> tuple[str, str, Any]:
        await asyncio.sleep(rng.uniform(0, 0.03))
        return session_id, job, (await Claims(client, POLICIES).claim(session_id, job)).answer

    async def sweep(ctx: OpsContext) -> list[str]:
        await asyncio.sleep(rng.uniform(0, 0.01))
        return await expire_unjoined(ctx, now=past)

    try:
        attempts = [
            claim(claimers[n], sid, f"AJ_{i}_{n}")
            for i, sid in enumerate(session_ids)
            for n in range(CLAIMERS)
        ]
        results = await asyncio.gather(*(sweep(s) for s in sweepers), *attempts)
    finally:
        for client in (*claimers, *(ctx.redis for ctx in sweepers)):
            await client.aclose()

    swept = [sid for found in results[:SWEEPERS] for sid in found]
    answers = results[SWEEPERS:]
    assert len(swept) == len(set(swept))  # each closed once, whichever sweeper did it
    outcomes = {"claimed": 0, "never_joined": 0}
    for session_id in session_ids:
        won = [job for sid, job, answer in answers if sid == session_id and answer == "claimed"]
        others = {answer for sid, _, answer in answers if sid == session_id} - {"claimed"}
        record = session_record(redis_client, session_id)
        # Exactly one winner: one job, or the sweeper; every loser was told who won.
        assert len(won) + (session_id in swept) == 1, (session_id, won, record)
        if won:
            assert record["status"] == "started" and record["claimed_by"] == won[0]
            assert "released_at" not in record and others <= {"taken"}
            assert redis_client.zscore(keys.global_active(), session_id) is not None
            outcomes["claimed"] += 1
        else:
            assert record["status"] == "never_joined" and "claimed_by" not in record
            assert others == {"closed"}
            outcomes["never_joined"] += 1
    print(f"race outcomes over {SESSIONS} sessions: {outcomes}")
