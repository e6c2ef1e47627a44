"""Erasure undoes what the visitor's sessions still hold, and keeps security blocks:
an open session is released through release.lua (its unused reserved minutes go back to
the global daily count, exactly once: a worker releasing later refunds nothing more), its
call is ended (tests/ops/test_erase_call.py does it against a real livekit-server; here
LiveKit is down and the output says so), and a block on the visitor stays, with the
reason in the output. Real token server, real Redis, the CLI in a subprocess."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.asyncio import Redis as AsyncRedis

from policies import load_policies
from policies.admission import Admission
from redisdb import keys
from tests.ops.support import ops_json, request_token, run_ops, running_ops_stack
from tests.server.support import away_from_bucket_edge, session_record
from tests.support import free_port

ADDRESS = "198.51.100.120"


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[Any, ...]]:
    # LiveKit configured but down (a closed local port): rooms cannot be deleted.
    with running_ops_stack(LIVEKIT_URL=f"ws://127.0.0.1:{free_port()}") as s:
        yield s


def global_seconds(r: redis.Redis, day: str) -> int:
    return int(r.get(keys.global_seconds(int(day))) or 0)


async def release(url: str, session_id: str, used_s: float, reason: str) -> Any:
    r = AsyncRedis.from_url(url)
    try:
        return await Admission(r, load_policies()).release(
            session_id, used_s, reason, {"status": "ended"}
        )
    finally:
        await r.aclose()


def test_erasure_refunds_open_sessions_once_and_keeps_blocks(stack: Any) -> None:
    server, redis_server, env = stack
    r = redis_server.client()
    away_from_bucket_edge(r, 86_400, margin_s=30)  # minutes are counted per UTC day
    # A finished call (90 s used, the rest refunded by the worker), then an open one.
    first = request_token(server.base_url, ADDRESS).json()["session_id"]
    assert asyncio.run(release(redis_server.url, first, 90, "user_hangup")).released
    response = request_token(server.base_url, ADDRESS)
    assert response.status_code == 201
    open_id = response.json()["session_id"]
    record = session_record(r, open_id)
    visitor, day, reserved = record["visitor"], record["day"], int(record["reserved_s"])
    ops_json(env, "block", visitor, "--for", "2d", "--reason", "scripted flood")
    minutes_before = global_seconds(r, day)

    erased = ops_json(env, "erase", "--ip", ADDRESS)
    assert erased["deleted"]["sessions"] == 2
    # Only the open session is refunded, in full (it never started); the ended one was
    # settled by its own release.
    assert erased["refunded_s"] == reserved
    assert global_seconds(r, day) == minutes_before - reserved
    assert r.zscore(keys.global_active(), open_id) is None
    assert erased["calls"]["not_ended"] == 1
    assert erased["calls"]["error"].startswith("LiveKit unreachable")
    # The block stays, and the output says why.
    assert erased["kept"]["keys_by_kind"] == {"block": 1}
    assert "abuse prevention" in erased["kept"]["why"]
    assert 0 < r.ttl(keys.block(visitor)) <= 2 * 86_400
    assert erased["remaining"] == {"sessions": 0, "keys_by_kind": {}}
    assert r.exists(keys.session(open_id), keys.session(first)) == 0
    assert request_token(server.base_url, ADDRESS).json()["error"] == "blocked"

    # Exactly once: the worker (or the sweeper) releasing later refunds nothing more.
    late = asyncio.run(release(redis_server.url, open_id, 0, "user_hangup"))
    assert not late.released
    assert global_seconds(r, day) == minutes_before - reserved
    assert r.exists(keys.session(open_id)) == 0  # and does not bring the record back

    again = ops_json(env, "erase", "--ip", ADDRESS)
    assert again["refunded_s"] == 0 and again["deleted"]["sessions"] == 0
    assert again["kept"]["keys_by_kind"] == {"block": 1}
    ops_json(env, "unblock", visitor)


def test_erasure_output_says_what_was_kept_and_why(stack: Any) -> None:
    server, redis_server, env = stack
    r = redis_server.client()
    response = request_token(server.base_url, "198.51.100.121")
    visitor = session_record(r, response.json()["session_id"])["visitor"]
    ops_json(env, "block", visitor, "--for", "1d", "--reason", "bot")
    done = run_ops(env, "erase", "--ip", "198.51.100.121")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    kinds = "sess=1, vact=1, vd=1, vh=1, vm=1, vsess=1, vun=1"
    assert lines[1] == f"Deleted: 1 session(s); keys by kind: {kinds}"
    assert lines[2] == "Refunded: 300 s of reserved call time (open sessions released first)"
    assert lines[3].startswith("Calls ended: 0 (LiveKit room deleted); no room: 0; not ended: 1")
    assert lines[4].startswith("Kept: block=1 (security blocks")
    assert "the privacy policy allows keeping what abuse prevention needs" in lines[4]
    assert lines[5] == "Remaining: 0 session(s); keys: none"
    ops_json(env, "unblock", visitor)


def test_a_block_reason_may_not_hold_an_address(stack: Any) -> None:
    _, _, env = stack
    for reason in ("flood from 203.0.113.9", "2001:db8::7 again", "proxy 198.51.100.1:8080"):
        done = run_ops(env, "block", "ab" * 16, "--reason", reason)
        assert done.returncode == 2, reason
        assert "may not contain an IP address" in done.stderr


def test_network_counts_are_shown_as_shared_and_kept_without_the_sessions(stack: Any) -> None:
    """The prefix aggregates around an address (its IPv6 /56 and /48 here) are keyed by
    pseudonyms of those networks: lookup finds them, apart, as shared; erase takes the
    person's sessions out of them and keeps the counts (a neighbour's too)."""
    server, redis_server, env = stack
    r = redis_server.client()
    mine = request_token(server.base_url, "2001:db8:e4a5:1::7").json()["session_id"]
    neighbour = request_token(server.base_url, "2001:db8:e4a5:100::7").json()["session_id"]
    nets = session_record(r, mine)["nets"].split()
    # Another /56 of the same /48: the /48 is what they share.
    theirs = session_record(r, neighbour)["nets"].split()
    assert len(nets) == 2 and theirs[0] != nets[0] and theirs[1] == nets[1]

    found = ops_json(env, "lookup", "--ip", "2001:db8:e4a5:1::99")
    assert {n["prefix"] for n in found["networks"]} == {56, 48}
    assert {n["network"] for n in found["networks"]} >= set(nets)
    shared = found["shared"]["keys_by_kind"]
    assert shared == {"nact": 2, "nd": 2, "nh": 2, "nun": 2}
    assert "nact" not in found["found"]["keys_by_kind"]  # not counted as the person's

    erased = ops_json(env, "erase", "--ip", "2001:db8:e4a5:1::99")
    assert erased["deleted"]["sessions"] == 1
    # The /56 was this person's alone: its sets emptied (and gone); the /48 keeps the
    # neighbour's session; the hour and day counts of both stay, as said.
    assert erased["shared"]["keys_by_kind"] == {"nact": 1, "nd": 2, "nh": 2, "nun": 1}
    assert "shared by everyone" in erased["shared"]["why"]
    for net in nets:
        for key in (keys.network_active(net), keys.network_unjoined(net)):
            assert r.zscore(key, mine) is None
    assert r.zscore(keys.network_active(nets[1]), neighbour) is not None
    day = int(session_record(r, neighbour)["day"])
    assert int(r.get(keys.visitor_bucket(keys.NETWORK_DAY, nets[1], day)) or 0) == 2
    text = run_ops(env, "lookup", "--ip", "2001:db8:e4a5:1::99").stdout
    assert "Shared with the networks around the address: nact=1, nd=2, nh=2, nun=1" in text
