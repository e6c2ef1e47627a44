"""LiveKit webhooks: signed events close sessions a dead worker left open, exactly once,
whatever the duplicates and the order; forged ones are refused and change nothing."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis as AsyncRedis

from policies import load_policies
from policies.admission import Admission
from policies.claim import Claims
from redisdb import keys
from sessions.store import SessionStore, Update
from tests.ops.support import (
    METRICS_TOKEN,
    auth,
    ops_env,
    participant_left,
    post_event,
    request_token,
    room_finished,
    running_ops_stack,
    signed_event,
)
from tests.server.support import dump_redis, session_record
from tests.support import RedisServer, ServerProcess


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[ServerProcess, RedisServer]]:
    with running_ops_stack() as (server, server_redis, _):
        yield server, server_redis


_ips = (f"203.0.113.{n}" for n in itertools.count(1))


def new_session(stack: Any) -> tuple[str, str]:
    ip = next(_ips)
    response = request_token(stack[0].base_url, ip)
    assert response.status_code == 201, response.text
    return response.json()["session_id"], ip


async def worker_started(url: str, session_id: str, seconds_ago: float) -> None:
    """What a worker writes as a call begins (its claim, then the start fields), then
    nothing: the worker is killed -9 mid-call and never writes its end."""
    r = AsyncRedis.from_url(url)
    try:
        assert (await Claims(r, load_policies()).claim(session_id, f"AJ_{session_id}")).ours
        written = await SessionStore(r).update_open(
            session_id,
            {"started_at": f"{time.time() - seconds_ago:.3f}", "join_delay_s": "1.4"},
        )
        assert written is Update.WRITTEN
    finally:
        await r.aclose()


def minutes_reserved(stack: Any, record: dict[str, str]) -> int:
    r = stack[1].client()
    key = keys.visitor_bucket(keys.VISITOR_SECONDS, record["visitor"], int(record["day"]))
    return int(r.get(key) or 0)


async def test_killed_worker_ends_abandoned_with_slot_back(stack: Any) -> None:
    server, redis_server = stack
    r = redis_server.client()
    session_id, ip = new_session(stack)
    await worker_started(redis_server.url, session_id, seconds_ago=37)
    # The visitor's one concurrent call is taken while the dead worker's session is open.
    assert request_token(server.base_url, ip).status_code == 429

    response = post_event(server.base_url, room_finished(session_id))
    assert response.status_code == 200
    assert response.json() == {"event": "room_finished", "outcome": "abandoned"}

    record = session_record(r, session_id)
    assert record["status"] == "abandoned" and record["end_reason"] == "abandoned"
    assert record["release_reason"] == "abandoned"
    assert 35 <= float(record["duration_s"]) <= 40
    assert abs(float(record["ended_at"]) - time.time()) < 5
    assert record["used_s"] == str(math.ceil(float(record["duration_s"])))
    assert int(record["refunded_s"]) == 300 - int(record["used_s"])
    assert minutes_reserved(stack, record) == int(record["used_s"])
    assert r.zscore(keys.global_active(), session_id) is None
    # Slot back: the same visitor can start a new call at once.
    assert request_token(server.base_url, ip).status_code == 201


async def test_duplicate_and_out_of_order_deliveries_close_once(stack: Any) -> None:
    server, redis_server = stack
    r = redis_server.client()
    orders = [
        ["agent_left", "room_finished", "room_finished", "agent_left"],
        ["room_finished", "agent_left", "room_finished", "room_finished"],
        ["visitor_left", "room_finished", "agent_left", "visitor_left"],
    ]
    for order in orders:
        session_id, _ = new_session(stack)
        await worker_started(redis_server.url, session_id, seconds_ago=20)
        events = {
            "room_finished": room_finished(session_id),
            "agent_left": participant_left(session_id, "agent"),
            "visitor_left": participant_left(session_id, "standard"),
        }
        outcomes = [post_event(server.base_url, events[name]).json()["outcome"] for name in order]
        closers = [o for o in outcomes if o == "abandoned"]
        assert len(closers) == 1, (order, outcomes)
        assert set(outcomes) <= {"abandoned", "already_released", "ignored"}
        record = session_record(r, session_id)
        assert record["status"] == "abandoned"
        assert minutes_reserved(stack, record) == int(record["used_s"])

    # Simultaneous duplicates (LiveKit retries overlapping): still exactly one closes.
    session_id, _ = new_session(stack)
    await worker_started(redis_server.url, session_id, seconds_ago=12)
    burst = [room_finished(session_id), participant_left(session_id, "agent")] * 6
    with ThreadPoolExecutor(12) as pool:
        outcomes = list(pool.map(lambda e: post_event(server.base_url, e).json()["outcome"], burst))
    assert outcomes.count("abandoned") == 1 and outcomes.count("already_released") == 11
    record = session_record(r, session_id)
    assert minutes_reserved(stack, record) == int(record["used_s"])


async def test_worker_closed_session_is_left_alone(stack: Any) -> None:
    server, redis_server = stack
    r = redis_server.client()
    session_id, _ = new_session(stack)
    await worker_started(redis_server.url, session_id, seconds_ago=50)
    client = AsyncRedis.from_url(redis_server.url)
    try:
        done = await Admission(client, load_policies()).release(
            session_id, 48, "user_hangup",
            {"status": "ended", "end_reason": "user_hangup", "duration_s": "48.0"},
        )  # fmt: skip
        assert done.released
    finally:
        await client.aclose()
    before = session_record(r, session_id)
    for event in (room_finished(session_id), participant_left(session_id, "agent")):
        assert post_event(server.base_url, event).json()["outcome"] == "already_released"
    assert session_record(r, session_id) == before
    assert before["status"] == "ended" and before["end_reason"] == "user_hangup"


def test_visitor_leaving_does_not_race_the_worker(stack: Any) -> None:
    server, redis_server = stack
    session_id, _ = new_session(stack)
    before = session_record(redis_server.client(), session_id)
    response = post_event(server.base_url, participant_left(session_id, "standard"))
    assert response.json()["outcome"] == "ignored"
    assert session_record(redis_server.client(), session_id) == before


def test_joined_room_but_no_agent_is_abandoned_from_room_creation(stack: Any) -> None:
    server, redis_server = stack
    session_id, _ = new_session(stack)
    now = time.time()
    event = room_finished(session_id, at=now)
    event["room"]["creationTime"] = str(int(now - 25))
    assert post_event(server.base_url, event).json()["outcome"] == "abandoned"
    record = session_record(redis_server.client(), session_id)
    assert 24 <= float(record["duration_s"]) <= 26


def test_unknown_rooms_and_other_events(stack: Any) -> None:
    server, _ = stack
    base = server.base_url
    other = room_finished("x")
    other["room"]["name"] = "someone-elses-room"
    assert post_event(base, other).json()["outcome"] == "not_ours"
    assert post_event(base, room_finished("no-such-session")).json()["outcome"] == "unknown"
    started = {"event": "room_started", "id": "EV_rs", "room": {"name": "demo-abc"}}
    assert post_event(base, started).json()["outcome"] == "ignored"


def test_forged_events_are_refused_and_change_nothing(stack: Any) -> None:
    server, redis_server = stack
    r = redis_server.client()
    session_id, _ = new_session(stack)
    url = server.base_url + "/livekit/webhook"
    before = sorted((k.name, k.contents) for k in dump_redis(r))

    body, good_token = signed_event(room_finished(session_id))
    _, wrong_secret = signed_event(room_finished(session_id), secret="not-our-secret-" * 3)
    other_body, _ = signed_event(participant_left(session_id, "agent"))
    attempts = [
        (body, {"Authorization": wrong_secret}),  # signed with another secret
        (other_body, {"Authorization": good_token}),  # a valid token for another body
        (body, {}),  # unsigned
        (body, {"Authorization": "garbage"}),
        (body + b" ", {"Authorization": good_token}),  # body altered after signing
    ]
    for content, headers in attempts:
        response = httpx.post(url, content=content, headers=headers, timeout=10)
        assert response.status_code == 401, response.text
        assert response.json()["error"] == "invalid_signature"
    assert sorted((k.name, k.contents) for k in dump_redis(r)) == before

    metrics = httpx.get(server.base_url + "/metrics", headers=auth(METRICS_TOKEN), timeout=10).text
    assert 'ocf_livekit_webhooks_total{event="other",outcome="bad_signature"} 5.0' in metrics


def test_redis_down_answers_503_so_livekit_retries(stack: Any, own_redis: RedisServer) -> None:
    server = ServerProcess(env=ops_env(own_redis.url)).start()
    try:
        own_redis.stop()
        response = post_event(server.base_url, room_finished("abcdefgh1234"))
        assert response.status_code == 503 and response.headers["retry-after"] == "5"
        # The catalogue is still served (from the files) and every failure is counted.
        agents = httpx.get(server.base_url + "/api/agents", timeout=10)
        assert agents.status_code == 200 and len(agents.json()["agents"]) == 4
        metrics = httpx.get(server.base_url + "/metrics", headers=auth(METRICS_TOKEN), timeout=10)
        assert metrics.status_code == 200
        for operation in ("webhook", "showcase", "metrics"):
            assert f'ocf_redis_errors_total{{operation="{operation}"}} 1.0' in metrics.text
    finally:
        server.stop()


def test_oversized_bodies_are_refused_before_reading_them(stack: Any) -> None:
    server, _ = stack
    big = b"{" + b" " * (64 * 1024) + b"}"
    response = httpx.post(server.base_url + "/livekit/webhook", content=big, timeout=10)
    assert response.status_code == 413 and response.json()["error"] == "body_too_large"
    page = httpx.post(server.base_url + "/ops", content=b"token=" + b"x" * 5000, timeout=10)
    assert page.status_code == 413 and "<script" not in page.text
