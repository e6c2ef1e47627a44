"""A worker killed mid-call (SIGKILL to its process group: the worker and its job process),
and nothing but LiveKit's own webhooks to the token server to close the session: closed
once, slot freed, unused minutes refunded; later deliveries change nothing; a new worker on
the same stack then serves the next call.

LiveKit notices the dead agent by itself (its connection stops answering) and sends
`participant_left` for it some 20 s later; that delivery closes the session (ops/webhook.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from livekit.protocol.models import ParticipantInfo

from tests.e2e.livekit_stack import Stack, running_stack
from tests.e2e.support import (
    Visitor,
    WebhookRecorder,
    counts_since,
    e2e_policies,
    eventually,
    holds_slot,
    issued,
    minutes_counters,
    participants,
    redis_of_its_own,
    replay,
    request_token,
    room_names,
    session_record,
    stack_env,
    visiting,
    webhook_counts,
)
from tests.support import RedisServer

pytestmark = pytest.mark.e2e

# Long enough that a healthy worker closes its call before LiveKit ends the room on its
# own (which would close it from the webhook as well); short enough for a quick test.
ROOM = {"departure_timeout_s": 8, "empty_timeout_s": 10}
# LiveKit takes ~20 s to give up on a killed agent; a busy machine may double that.
AGENT_GONE_S = 120


# A Redis of the module's own: its day counters hold this module's calls only.
redis_server = pytest.fixture(scope="module")(redis_of_its_own)


@pytest.fixture(scope="module")
def recorder() -> Iterator[WebhookRecorder]:
    with WebhookRecorder().running() as recorder:
        yield recorder


@pytest.fixture(scope="module")
def stack(
    redis_server: RedisServer, recorder: WebhookRecorder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    policies = e2e_policies(tmp_path_factory.mktemp("policies"), room=ROOM, session={})
    with running_stack(
        redis_server.url,
        env=stack_env(policies),
        name="worker-crash",
        webhook_urls=(recorder.url,),
    ) as stack:
        yield stack


async def test_killed_worker_is_closed_by_livekits_webhooks(
    stack: Stack, redis_server: RedisServer, recorder: WebhookRecorder
) -> None:
    r = redis_server.client()
    assert stack.worker is not None
    token = issued(stack)
    session_id, room = token["session_id"], token["room_name"]
    reserved_s = int(session_record(r, session_id)["reserved_s"])
    assert minutes_counters(r, session_record(r, session_id)) == (reserved_s, reserved_s)
    before = webhook_counts(stack)

    visitor = await Visitor(token).join()
    try:
        assert await visitor.agent_speaks() >= 200

        async def claimed() -> bool:
            return session_record(r, session_id).get("status") == "started"

        await eventually(claimed, 30, "the worker to record the call's start")
        # The visitor's one concurrent call is held.
        refused = request_token(stack)
        assert refused.status_code == 429 and refused.json()["error"] == "rate_limited"

        stack.worker.kill()
        assert stack.worker.proc is not None and stack.worker.proc.returncode == -9

        async def released() -> bool:
            return "released_at" in session_record(r, session_id)

        await eventually(released, AGENT_GONE_S, "LiveKit's webhook to close the session")
        record = session_record(r, session_id)
        # What closed it: LiveKit's own participant_left for the agent, as it sent it.
        (agent_left,) = recorder.find(room, "participant_left", kind="AGENT")
        assert not recorder.find(room, "room_finished")
        assert (record["status"], record["end_reason"], record["release_reason"]) == (
            "abandoned", "abandoned", "abandoned",
        )  # fmt: skip
        used = int(record["used_s"])
        assert 0 < used < reserved_s
        assert int(record["refunded_s"]) == reserved_s - used
        # Timed from the worker's recorded start to LiveKit's event.
        assert float(record["duration_s"]) == pytest.approx(
            int(agent_left.event["createdAt"]) - float(record["started_at"]), abs=1.5
        )
        assert not holds_slot(r, session_id)
        assert minutes_counters(r, record) == (used, used)
        # The visitor is still in the room; only the agent is gone.
        kinds = [p.kind for p in await participants(stack, room)]
        assert kinds == [ParticipantInfo.Kind.STANDARD]
    finally:
        await visitor.leave()

    # The visitor leaving and the room finishing (both delivered by LiveKit) change nothing.
    async def room_finished() -> bool:
        return bool(recorder.find(room, "room_finished"))

    await eventually(room_finished, 60, "LiveKit's room_finished")
    await asyncio.sleep(2)
    assert room not in await room_names(stack)
    assert session_record(r, session_id) == record
    # A duplicate of the delivery that closed it, byte for byte as LiveKit sent it.
    again = replay(stack, agent_left)
    assert again.status_code == 200
    assert again.json() == {"event": "participant_left", "outcome": "already_released"}
    assert session_record(r, session_id) == record
    assert minutes_counters(r, record) == (used, used)

    assert counts_since(before, webhook_counts(stack)) == {
        ("room_started", "ignored"): 1,
        ("participant_joined", "ignored"): 2,
        ("track_published", "ignored"): 1,
        ("track_unpublished", "ignored"): 1,
        ("participant_left", "abandoned"): 1,
        ("participant_left", "ignored"): 1,
        ("participant_left", "already_released"): 1,
        ("room_finished", "already_released"): 1,
    }
    # Every one of LiveKit's deliveries for the room reached the token server too.
    assert len(recorder.of_room(room)) == 8
    log = stack.logs()["token-server.log"]
    assert log.count(f'"session abandoned", "session_id": "{session_id}"') == 1


async def test_a_new_worker_serves_the_next_call(stack: Stack, redis_server: RedisServer) -> None:
    r = redis_server.client()
    assert stack.worker is not None
    stack.worker.kill()  # dead already after the test above; this one stands alone
    stack.worker.start()

    async with visiting(issued(stack)) as visitor:
        assert await visitor.agent_speaks() >= 200
        session_id = visitor.session_id

        async def claimed() -> bool:
            return session_record(r, session_id).get("status") == "started"

        await eventually(claimed, 30, "the new worker to record the call's start")

    async def ended() -> bool:
        return "released_at" in session_record(r, session_id)

    await eventually(ended, 60, "the worker to close the call")
    record = session_record(r, session_id)
    assert (record["status"], record["end_reason"]) == ("ended", "user_hangup")
    assert not holds_slot(r, session_id)
