"""A replayed token brings no second agent, through the real LiveKit path.

A caller (LiveKit's Python SDK) joins with a token from the real token server, the agent
joins and the call runs; the caller leaves, the agent closes the session (`ended`) and
deletes the room. The caller joins AGAIN with the same token: LiveKit creates the room
anew and dispatches the agent again, and the worker declines that job (the session is
closed) and deletes the room. No agent joins, the record stays `ended` with its one
release. Inside scripts/offline: nothing but 127.0.0.0/8.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
import redis
from livekit import api, rtc

from redisdb import keys
from tests.e2e.livekit_stack import Stack, running_stack
from tests.server.support import session_record

pytestmark = pytest.mark.e2e

# The replay's dispatch is answered within a second on an idle machine; an agent that
# would join anyway does so within ~0.5 s of its dispatch. 10 s leaves room for a busy one.
NO_AGENT_WINDOW_S = 10.0


def agents_in(room: rtc.Room) -> list[str]:
    return [
        p.identity
        for p in room.remote_participants.values()
        if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
    ]


async def until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(0.2)


async def room_exists(stack: Stack, name: str) -> bool:
    async with stack.room_api() as lkapi:
        rooms = await lkapi.room.list_rooms(api.ListRoomsRequest(names=[name]))
    return any(r.name == name for r in rooms.rooms)


async def test_a_replayed_token_brings_no_second_agent(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    with running_stack(redis_url, name="replay") as stack:
        token = httpx.post(
            f"{stack.base_url}/api/token", json={"agent": "realty-desk-en"}, timeout=10
        )
        assert token.status_code == 201, token.text
        grant = token.json()
        session_id, room_name = grant["session_id"], grant["room_name"]

        # The call: the agent joins, claims the session, greets.
        first = rtc.Room()
        await first.connect(grant["server_url"], grant["participant_token"])

        async def agent_joined() -> bool:
            return bool(agents_in(first))

        await until(agent_joined, 30, "the agent")
        await until(lambda: _status_is(client, session_id, "started"), 10, "the claim (started)")
        claimed_by = session_record(client, session_id)["claimed_by"]
        await asyncio.sleep(2)  # the greeting plays; the call is under way

        # The caller hangs up: the agent ends the call, records it and deletes the room.
        await first.disconnect()
        await until(lambda: _status_is(client, session_id, "ended"), 30, "the record ended")
        await until(_not(room_exists, stack, room_name), 30, "the room deleted")
        ended = session_record(client, session_id)
        assert ended["end_reason"] == "user_hangup" and ended["claimed_by"] == claimed_by

        # The same token again: LiveKit creates the room anew and dispatches the agent.
        await replay_is_declined(stack, grant, room_name)
        assert not await room_exists(stack, room_name)

        # The record as the call left it: ended, released once, by the first job.
        assert session_record(client, session_id) == ended
        assert client.zscore(keys.global_active(), session_id) is None
        worker_log = stack.worker.logs() if stack.worker else ""
        declined = [
            json.loads(line)
            for line in worker_log.splitlines()
            if line.startswith("{") and '"job declined"' in line
        ]
        assert [d["claim"] for d in declined] == ["closed"], declined
        assert declined[0]["session_id"] == session_id
    client.close()


def job_requests(stack: Stack) -> int:
    """Jobs LiveKit offered the worker (it logs each one it is free to consider)."""
    log = stack.worker.logs() if stack.worker else ""
    return log.count('"received job request"')


async def replay_is_declined(stack: Stack, grant: dict[str, Any], room_name: str) -> None:
    """Join with the token again and watch: the worker is offered the job (it is full by
    call count, never by the shared machine's CPU: AGENT_MAX_CALLS), no agent appears for
    NO_AGENT_WINDOW_S, and the caller is let go (the worker deleted the room)."""
    asked_before = job_requests(stack)
    replay = rtc.Room()
    gone = asyncio.Event()
    replay.on("disconnected", lambda *_: gone.set())
    seen_agents: list[str] = []

    def on_joined(participant: rtc.RemoteParticipant) -> None:
        if participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            seen_agents.append(participant.identity)

    replay.on("participant_connected", on_joined)
    try:
        await replay.connect(grant["server_url"], grant["participant_token"])
    except rtc.ConnectError:
        gone.set()  # the room was deleted while the caller was still joining

    async def offered() -> bool:
        return job_requests(stack) > asked_before

    await until(offered, 30, "LiveKit offering the replayed job to the worker")
    started = time.monotonic()
    while time.monotonic() - started < NO_AGENT_WINDOW_S:
        assert not seen_agents and not agents_in(replay), seen_agents
        await asyncio.sleep(0.2)
    let_go = gone.is_set()  # before our own disconnect, which fires the event too
    await replay.disconnect()
    # The worker deleted the room of the closed session: the caller was let go.
    assert let_go, "the replaying caller was left in the room"


async def _status_is(client: redis.Redis, session_id: str, status: str) -> bool:
    return session_record(client, session_id).get("status") == status


def _not(check: Any, *args: Any) -> Any:
    async def negated() -> bool:
        return not await check(*args)

    return negated
