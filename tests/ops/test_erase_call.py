"""Erasure ends the call in progress, against a real livekit-server: a caller (LiveKit's
Python SDK) talks to the real worker (`python -m agent start`, vendor fakes), then
`python -m ops erase --ip -` deletes the room through LiveKit's RoomService, which hangs
the caller up; the call's unused reserved minutes go back to the global daily count, and
nothing the worker writes when its call ends brings the erased record back. Runs inside
scripts/offline (nothing but 127.0.0.0/8)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable

import pytest
import redis

from redisdb import keys
from tests.e2e.livekit_stack import running_stack, stack_env
from tests.e2e.support import Visitor, issued
from tests.ops.support import HASH_SECRET, OPS_TOKEN
from tests.server.support import session_record
from tests.support import ROOT

pytestmark = pytest.mark.e2e

CALLER_ADDRESS = "127.0.0.1"  # no proxy in the stack: the token server sees the socket peer


async def eventually(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)


async def erase(env: dict[str, str], address: str) -> dict[str, object]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ops", "erase", "--ip", "-", "--json",
        cwd=ROOT, env={**os.environ, **env}, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(address.encode() + b"\n"), 60)
    assert proc.returncode == 0, err.decode()
    result: dict[str, object] = json.loads(out)
    return result


def global_seconds(client: redis.Redis, day: int) -> int:
    return int(client.get(keys.global_seconds(day)) or 0)


async def test_erasure_ends_the_call_in_progress(redis_url: str, redis_client: redis.Redis) -> None:
    extra = {"OPS_TOKEN": OPS_TOKEN, "VISITOR_HASH_SECRET": HASH_SECRET}
    with running_stack(redis_url, name="ops-erase-call", env=extra) as stack:
        grant = issued(stack)
        session_id, room_name = grant["session_id"], grant["room_name"]
        caller = await Visitor(grant).join()
        hung_up = asyncio.Event()
        caller.room.on("disconnected", lambda *_: hung_up.set())
        try:
            await caller.agent_speaks(timeout=60)  # the greeting
            await eventually(
                lambda: session_record(redis_client, session_id).get("status") == "started",
                30,
                "the worker to record the start",
            )
            record = session_record(redis_client, session_id)
            day, reserved = int(record["day"]), int(record["reserved_s"])
            minutes_before = global_seconds(redis_client, day)
            await asyncio.sleep(2)  # some of the call is used

            erased = await erase(stack_env(redis_url, stack.livekit_url, **extra), CALLER_ADDRESS)

            # The room is gone and LiveKit hung the caller up.
            assert erased["calls"] == {"ended": 1, "no_room": 0, "not_ended": 0, "error": None}
            await asyncio.wait_for(hung_up.wait(), 30)
            assert room_name not in stack.room_names()
            # The minutes not used go back; those used stay counted.
            refunded = erased["refunded_s"]
            assert isinstance(refunded, int)
            assert 2 <= reserved - refunded < 60, erased
            assert global_seconds(redis_client, day) == minutes_before - refunded
            assert erased["remaining"] == {"sessions": 0, "keys_by_kind": {}}
            # The worker ends its call; its end write and release find nothing to change.
            assert stack.worker is not None
            worker = stack.worker
            await eventually(
                lambda: "session recorded" in worker.logs(), 30, "the worker to end the call"
            )
            await asyncio.sleep(2)
            assert list(redis_client.scan_iter(match=keys.pattern(keys.SESSION))) == []
            assert global_seconds(redis_client, day) == minutes_before - refunded
        finally:
            await caller.leave()
