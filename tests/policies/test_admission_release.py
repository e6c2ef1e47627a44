"""Release and lease expiry: a slot comes back exactly once, unused minutes are refunded,
and a slot nobody releases (crashed worker, visitor who never joined) frees itself.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest
import redis
from redis.asyncio import Redis

from policies import Policies, load_policies
from policies.admission import Admission, Admitted, Refusal, Refused
from redisdb import keys
from redisdb.connection import connect
from tests.server.support import redis_now


@pytest.fixture
async def aredis(redis_url: str, redis_client: redis.Redis) -> AsyncIterator[Redis]:
    client = connect(redis_url, 2.0)
    yield client
    await client.aclose()


def new_visitor() -> str:
    return secrets.token_hex(16)


def record(visitor: str, session_id: str, duration_s: int) -> dict[str, str]:
    # The fields the token server writes at mint (release reads `visitor` back from it).
    return {
        "session_id": session_id,
        "room": f"demo-{session_id}",
        "persona": "agence-immo-fr",
        "language": "fr",
        "visitor": visitor,
        "ua": secrets.token_hex(16),
        "ua_family": "Chrome/Windows/desktop",
        "salt_period": "1",
        "max_duration_s": str(duration_s),
        "join_window_s": "120",
        "status": "issued",
    }


async def admit(admission: Admission, visitor: str, duration_s: int) -> tuple[str, object]:
    session_id = secrets.token_urlsafe(12)
    decision = await admission.admit(
        visitor=visitor,
        session_id=session_id,
        persona="agence-immo-fr",
        duration_s=duration_s,
        record=record(visitor, session_id, duration_s),
    )
    return session_id, decision


def reserved(client: redis.Redis, visitor: str) -> tuple[int, int]:
    day = int(redis_now(client) // 86_400)
    mine = client.get(f"{keys.PREFIX}{keys.VISITOR_SECONDS}:{visitor}:{day}")
    everyone = client.get(f"{keys.PREFIX}{keys.GLOBAL_SECONDS}:{day}")
    return int(mine or 0), int(everyone or 0)


async def test_release_refunds_unused_time_and_frees_the_slot_once(
    aredis: Redis, redis_client: redis.Redis
) -> None:
    policies = load_policies()  # shipped limits: one session at a time per visitor
    assert policies.limits.visitor.concurrent_sessions == 1
    admission = Admission(aredis, policies)
    visitor = new_visitor()

    session_id, decision = await admit(admission, visitor, 300)
    assert isinstance(decision, Admitted)
    # Held for the join window (+ margin) until a worker claims the session.
    assert decision.lease_expires_at - decision.issued_at == pytest.approx(
        policies.admission_lease_s(), abs=0.01
    )
    _, second = await admit(admission, visitor, 300)
    assert isinstance(second, Refused)
    assert second.reason == Refusal.VISITOR_CONCURRENT
    assert 0 < second.retry_after_s <= policies.admission_lease_s()
    assert reserved(redis_client, visitor) == (300, 300)
    ttl_before = redis_client.ttl(keys.session(session_id))

    released = await admission.release(session_id, 70.2, "user_hangup")
    assert (released.released, released.refunded_s, released.detail) == (True, 229, "released")
    assert reserved(redis_client, visitor) == (71, 71)
    assert redis_client.zscore(keys.visitor_active(visitor), session_id) is None
    assert redis_client.zscore(keys.global_active(), session_id) is None
    stored = redis_client.hgetall(keys.session(session_id))
    assert stored[b"used_s"] == b"71"
    assert stored[b"refunded_s"] == b"229"
    assert stored[b"release_reason"] == b"user_hangup"
    assert b"released_at" in stored
    # Releasing never extends the record's life.
    assert redis_client.ttl(keys.session(session_id)) <= ttl_before

    # A retry or a duplicate webhook changes nothing.
    again = await admission.release(session_id, 10, "duplicate")
    assert (again.released, again.refunded_s, again.detail) == (False, 0, "already_released")
    assert reserved(redis_client, visitor) == (71, 71)
    assert redis_client.hget(keys.session(session_id), "release_reason") == b"user_hangup"

    # The slot is free: the visitor may call again.
    _, third = await admit(admission, visitor, 300)
    assert isinstance(third, Admitted)
    assert reserved(redis_client, visitor) == (371, 371)


async def test_concurrent_releases_release_exactly_once(
    aredis: Redis, redis_client: redis.Redis
) -> None:
    admission = Admission(aredis, load_policies())
    visitor = new_visitor()
    session_id, decision = await admit(admission, visitor, 300)
    assert isinstance(decision, Admitted)
    results = await asyncio.gather(
        *(admission.release(session_id, 100, f"r{i}") for i in range(20))
    )
    assert sum(r.released for r in results) == 1
    assert sorted(r.detail for r in results) == ["already_released"] * 19 + ["released"]
    assert reserved(redis_client, visitor) == (100, 100)


async def test_release_edge_cases(aredis: Redis, redis_client: redis.Redis) -> None:
    admission = Admission(aredis, load_policies())
    unknown = await admission.release("no-such-session", 10, "x")
    assert (unknown.released, unknown.detail) == (False, "unknown")
    assert redis_client.dbsize() == 0  # releasing an unknown session creates nothing

    visitor = new_visitor()
    session_id, _ = await admit(admission, visitor, 300)
    # A call that ran over (clock skew, late webhook): no refund, never a negative counter.
    over = await admission.release(session_id, 400, "max_duration")
    assert (over.released, over.refunded_s) == (True, 0)
    assert reserved(redis_client, visitor) == (300, 300)


def short_lease(policies: Policies) -> Policies:
    """The same policies with a 1 s join window and no margin, so admission's lease is 1 s.

    The policy model rightly refuses a lease this short (join windows start at 10 s); the
    lease is only a number handed to the admission script, and the script measures it on
    Redis's own clock. Handing it 1 s lets real time run the lease out in a test, through
    exactly the code path a crashed worker's or a never-used token's lease takes.
    """
    session = policies.limits.session.model_copy(update={"join_window_s": 1, "lease_margin_s": 0})
    limits = policies.limits.model_copy(update={"session": session})
    return policies.model_copy(update={"limits": limits})


async def test_a_lease_nobody_releases_expires_on_its_own(
    aredis: Redis, redis_client: redis.Redis
) -> None:
    policies = short_lease(load_policies())
    assert policies.admission_lease_s() == 1
    admission = Admission(aredis, policies)
    crashed, other = new_visitor(), new_visitor()

    session_id, decision = await admit(admission, crashed, 1)
    assert isinstance(decision, Admitted)
    _, refused = await admit(admission, crashed, 1)
    assert isinstance(refused, Refused)
    assert refused.reason == Refusal.VISITOR_CONCURRENT
    # The lease keys themselves cannot outlive the lease (plus a second) either.
    assert 0 < redis_client.pttl(keys.visitor_active(crashed)) <= 2000

    await asyncio.sleep(1.2)  # the worker "crashed": nobody calls release

    _, later = await admit(admission, crashed, 1)
    assert isinstance(later, Admitted)
    assert redis_client.zscore(keys.global_active(), session_id) is None
    assert redis_client.zscore(keys.visitor_active(crashed), session_id) is None
    # Another visitor's admission sweeps expired global leases too.
    await asyncio.sleep(1.2)
    _, theirs = await admit(admission, other, 1)
    assert isinstance(theirs, Admitted)
    assert redis_client.zcard(keys.global_active()) == 1
