"""Two of everything (tests/e2e/cluster_stack.py): two livekit-server nodes in LiveKit's
multi-node mode over a Redis of their own, two token servers, two workers, one Redis of
ours. LiveKit routes rooms and jobs between the nodes; our records and limits live in our
Redis only.

- jobs go to both workers, whichever token server and node a visitor came through;
- a worker killed mid-call (SIGKILL to its process group) loses its own calls only: each is
  closed once, as `abandoned`, by LiveKit's webhooks, and its slot freed; the other
  worker's calls go on, and the next call goes to it, across nodes;
- a livekit node killed under calls: every session still ends exactly once with a
  consistent status, no slot stays held, and the day's minutes add up to the calls' use;
- the global admission limit is exact across both token servers under a burst.

The tests share one cluster and run in this order: the last one leaves the global limit
full.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
import redis
from livekit.protocol.models import ParticipantInfo

from redisdb import keys
from tests.e2e.cluster_stack import Cluster, running_cluster
from tests.e2e.livekit_stack import Stack
from tests.e2e.support import (
    PERSONA,
    Visitor,
    counts_since,
    e2e_policies,
    eventually,
    everyone_today,
    holds_slot,
    issued,
    participants,
    redis_of_its_own,
    session_record,
    stack_env,
    webhook_counts,
)
from tests.server.support import roomy_caps
from tests.support import RedisServer, write_policies

pytestmark = pytest.mark.e2e

GLOBAL_CONCURRENT = 6
BURST = 30
# Quick room timeouts: a room whose people are gone finishes soon after.
ROOM = {"departure_timeout_s": 8, "empty_timeout_s": 10}
# LiveKit takes ~20 s to give up on a killed agent; a busy machine may double that.
AGENT_GONE_S = 120
# Distinct visitors (TEST-NET-2 addresses through X-Forwarded-For from a trusted proxy):
# only the global limits bind, never one visitor's.
_ADDRESSES = (f"198.51.100.{i}" for i in itertools.count(1))


def next_address() -> str:
    return next(_ADDRESSES)


redis_server = pytest.fixture(scope="module")(redis_of_its_own)


@pytest.fixture(scope="module")
def cluster(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    policies = e2e_policies(tmp_path_factory.mktemp("policies"), room=ROOM, session={})
    # Every visitor's address is in one documentation /24: only the global limit may bind.
    write_policies(
        policies,
        limits=roomy_caps({"room": ROOM, "global": {"concurrent_sessions": GLOBAL_CONCURRENT}}),
    )
    env = {**stack_env(policies), "TRUSTED_PROXIES": "127.0.0.1/32"}
    with running_cluster(redis_server.url, env=env, name="cluster") as cluster:
        yield cluster


# --- what the logs and Redis say ------------------------------------------------------------


def log_events(text: str, message: str) -> list[dict[str, object]]:
    """The JSON log lines saying `message` (the worker logs it as `message`, the token
    server as `msg`)."""
    found = []
    for line in text.splitlines():
        if f'"{message}"' in line and line.startswith("{"):
            event = json.loads(line)
            if message in (event.get("message"), event.get("msg")):
                found.append(event)
    return found


def worker_of(cluster: Cluster) -> dict[str, int]:
    """Which worker started each session's call (from the workers' own logs)."""
    return {
        str(event["session_id"]): index
        for index, worker in enumerate(cluster.workers)
        for event in log_events(worker.logs(), "call started")
    }


def closes(cluster: Cluster, session_id: str) -> list[str]:
    """Every release of the session that took effect, with the log that made it: a
    worker's end record or a token server's close from a webhook."""
    made = []
    for name, text in cluster.logs().items():
        for event in log_events(text, "session recorded"):
            if event["session_id"] == session_id and event["release"] == "released":
                made.append(f"{name}: ended")
        for event in log_events(text, "session abandoned"):
            if event["session_id"] == session_id:
                made.append(f"{name}: abandoned")
    return made


def consistent(record: dict[str, str]) -> bool:
    """A closed record as docs/sessions.md describes it: status and reasons agree."""
    if "released_at" not in record:
        return False
    if record["status"] == "abandoned":
        return record["release_reason"] == record["end_reason"] == "abandoned"
    # the worker's own end (its reason), or its late end fields after a webhook's close
    return record["status"] == "ended" and bool(record.get("end_reason"))


def no_slot_held(r: redis.Redis) -> bool:
    if r.zcard(keys.global_active()):
        return False
    return not any(r.zcard(k) for k in r.scan_iter(match=keys.pattern(keys.VISITOR_ACTIVE)))


async def every_slot_free(r: redis.Redis) -> None:
    async def free() -> bool:
        return no_slot_held(r)

    await eventually(free, 30, "every slot to be free")


async def all_closed(r: redis.Redis, visitors: list[Visitor], timeout: float, what: str) -> None:
    async def closed() -> bool:
        return all("released_at" in session_record(r, v.session_id) for v in visitors)

    await eventually(closed, timeout, what)


async def call(column: Stack, r: redis.Redis) -> Visitor:
    """A visitor through `column`'s token server and node, its agent heard, its session
    claimed."""
    visitor = await Visitor(issued(column, next_address())).join()
    assert await visitor.agent_speaks(timeout=90) >= 200

    async def claimed() -> bool:
        return session_record(r, visitor.session_id).get("status") == "started"

    await eventually(claimed, 30, "the worker to record the call's start")
    return visitor


def webhook_totals(cluster: Cluster) -> dict[tuple[str, str], float]:
    totals: Counter[tuple[str, str]] = Counter()
    for column in cluster.columns:
        totals.update(webhook_counts(column))
    return dict(totals)


# --- the tests ------------------------------------------------------------------------------


async def test_jobs_spread_and_a_killed_worker_loses_only_its_own_calls(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    r = redis_server.client()
    columns = cluster.columns
    before = webhook_totals(cluster)
    # One after another, alternating token servers (so nodes): LiveKit offers each job to
    # the worker with the most room left (its load: calls / AGENT_MAX_CALLS).
    visitors = [await call(columns[i % 2], r) for i in range(4)]
    taken_by = worker_of(cluster)
    per_worker = Counter(taken_by[v.session_id] for v in visitors)
    assert set(per_worker) == {0, 1}, f"every call went to one worker: {per_worker}"
    # LiveKit offers a worker a job only while its load is under `agents.target_load` (0.7):
    # at AGENT_MAX_CALLS=4 a worker takes 3 calls (docs/scaling.md).
    assert max(per_worker.values()) <= 3

    victim = per_worker.most_common(1)[0][0]
    survivor = 1 - victim
    lost = [v for v in visitors if taken_by[v.session_id] == victim]
    kept = [v for v in visitors if taken_by[v.session_id] == survivor]
    cluster.workers[victim].kill()
    try:
        await all_closed(r, lost, AGENT_GONE_S, "LiveKit's webhooks to close the lost calls")
        for visitor in lost:
            record = session_record(r, visitor.session_id)
            assert (record["status"], record["release_reason"]) == ("abandoned", "abandoned")
            assert not holds_slot(r, visitor.session_id)
            (closed_by,) = closes(cluster, visitor.session_id)
            assert closed_by.startswith("token-server-") and closed_by.endswith(": abandoned")
        # The survivor's calls go on: open records, held slots, its agent in each room.
        for visitor in kept:
            record = session_record(r, visitor.session_id)
            assert record["status"] == "started" and "released_at" not in record
            assert holds_slot(r, visitor.session_id)
            kinds = [p.kind for p in await participants(columns[victim], visitor.room_name)]
            assert ParticipantInfo.Kind.AGENT in kinds

        # The next call, through the dead worker's own token server and node, goes to the
        # survivor (registered with the other node).
        fresh = await call(columns[victim], r)
        assert worker_of(cluster)[fresh.session_id] == survivor
        kept.append(fresh)
    finally:
        for visitor in kept + lost:
            await visitor.leave()

    try:
        # The survivor was alive all along: it ends each of its calls itself, once. Its
        # first calls sat silent while LiveKit gave up on the victim (20 s and more), so
        # the agent may have hung up on the silence before the visitor left: a worker's
        # own end either way, never the webhooks' `abandoned`.
        await all_closed(r, kept, 60, "the survivor to close its calls")
        for visitor in kept:
            record = session_record(r, visitor.session_id)
            assert record["status"] == "ended", record
            assert record["end_reason"] in ("user_hangup", "silence"), record
            assert len(closes(cluster, visitor.session_id)) == 1
        await every_slot_free(r)
        closed = counts_since(before, webhook_totals(cluster))
        assert closed.get(("participant_left", "abandoned")) == len(lost)
    finally:
        cluster.workers[victim].start()  # whole again for the next test, pass or fail


def node_ids(cluster: Cluster) -> list[str]:
    """Each node's LiveKit node id, from its log."""
    ids = []
    for node in cluster.nodes:
        assert node.log_path is not None
        text = node.log_path.read_text(errors="replace")
        ids.append(next(json.loads(x)["nodeID"] for x in text.splitlines() if '"nodeID"' in x))
    return ids


def room_hosts(cluster: Cluster) -> dict[str, str]:
    """Room name -> the id of the node hosting it, from LiveKit's own Redis (its router's
    map)."""
    lk = cluster.livekit_redis.client()
    try:
        raw: dict[bytes, bytes] = lk.hgetall("room_node_map")  # type: ignore[assignment]
        return {k.decode(): v.decode() for k, v in raw.items()}
    finally:
        lk.close()


async def test_a_livekit_node_killed_under_calls_leaves_every_record_consistent(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    r = redis_server.client()
    columns = cluster.columns
    assert no_slot_held(r)
    used_before = everyone_today(r)
    visitors = [await call(columns[i % 2], r) for i in range(4)]
    ids, hosts = node_ids(cluster), room_hosts(cluster)
    # The node hosting the most of these rooms dies (so at least one room dies with it).
    hosted = Counter(ids.index(hosts[v.room_name]) for v in visitors)
    killed = hosted.most_common(1)[0][0]
    node = cluster.nodes[killed]
    assert node.proc is not None
    try:
        os.kill(node.proc.pid, signal.SIGKILL)  # no drain, no webhooks from it ever again
        node.proc.wait(10)
        await all_closed(r, visitors, 180, "every session to close")
    finally:
        for visitor in visitors:
            await visitor.leave()
    await asyncio.sleep(5)  # any late webhook or end record would land now
    records = {v.session_id: session_record(r, v.session_id) for v in visitors}
    for session_id, record in records.items():
        assert consistent(record), record
        assert len(closes(cluster, session_id)) == 1, closes(cluster, session_id)
        assert not holds_slot(r, session_id)
    await every_slot_free(r)
    # Reserved at issue, unused seconds refunded at the close: what is left is what was used.
    assert everyone_today(r) - used_before == sum(int(x["used_s"]) for x in records.values())

    # The surviving node still serves calls.
    fresh = await call(columns[1 - killed], r)
    await fresh.leave()
    await all_closed(r, [fresh], 60, "the new call to close")
    assert consistent(session_record(r, fresh.session_id))


async def test_the_global_limit_is_exact_across_both_token_servers(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    r = redis_server.client()
    assert no_slot_held(r)
    urls = [column.base_url for column in cluster.columns]
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=64)) as client:
        # Connections open to both servers first, so the burst itself races in Redis.
        await asyncio.gather(*(client.get(urls[i % 2] + "/healthz") for i in range(BURST)))
        answers = await asyncio.gather(
            *(
                client.post(
                    urls[i % 2] + "/api/token",
                    json={"agent": PERSONA},
                    headers={"X-Forwarded-For": next_address()},
                )
                for i in range(BURST)
            )
        )
    admitted = [a.json()["session_id"] for a in answers if a.status_code == 201]
    refused = [(a.status_code, a.json()["error"]) for a in answers if a.status_code != 201]
    assert len(admitted) == GLOBAL_CONCURRENT
    assert refused == [(503, "capacity")] * (BURST - GLOBAL_CONCURRENT)
    held = {m.decode() for m in r.zrange(keys.global_active(), 0, -1)}  # type: ignore[union-attr]
    assert held == set(admitted)
