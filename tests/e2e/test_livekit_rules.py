"""What the real livekit-server enforces on the visitor's token (server/livekit_token.py), tried as
an attacker would with LiveKit's Python SDK and raw API calls, and how rooms nobody stays in
end: LiveKit's own `room_finished` webhook and the never-joined sweeper close the session.

Each rule, where we set it and which test shows it: docs/livekit-enforcement.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import redis
import websockets
from livekit import rtc
from livekit.protocol.models import ParticipantInfo, TrackSource, TrackType
from livekit.protocol.rtc import SignalResponse

from server.livekit_token import room_name
from tests.e2e.livekit_stack import Stack, running_stack
from tests.e2e.support import (
    Visitor,
    counts_since,
    e2e_policies,
    eventually,
    everyone_today,
    holds_slot,
    issued,
    minutes_counters,
    own_token,
    participants,
    redis_of_its_own,
    room_info,
    room_names,
    session_record,
    stack_env,
    visiting,
    webhook_counts,
)
from tests.ops.support import run_ops
from tests.support import RedisServer

pytestmark = pytest.mark.e2e

# Quick room timeouts; a join window long enough that a joined room finishes before the
# sweeper could take the session for a never-joined one.
ROOM = {"empty_timeout_s": 6, "departure_timeout_s": 4}
SESSION = {"join_window_s": 20, "lease_margin_s": 0}

_visitors = (f"198.51.100.{n}" for n in itertools.count(1))


# A Redis of the module's own: its day counters hold this module's calls only.
redis_server = pytest.fixture(scope="module")(redis_of_its_own)


@pytest.fixture(scope="module")
def policies_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return e2e_policies(tmp_path_factory.mktemp("policies"), room=ROOM, session=SESSION)


def _env(policies_dir: Path) -> dict[str, str]:
    # Each test is its own visitor (X-Forwarded-For from loopback), so per-visitor limits
    # never decide a test.
    return stack_env(policies_dir, TRUSTED_PROXIES="127.0.0.1/32")


@pytest.fixture
def staffed(redis_server: RedisServer, policies_dir: Path) -> Iterator[Stack]:
    """With the agent worker: for the one test that needs the agent in the room."""
    with running_stack(redis_server.url, env=_env(policies_dir), name="rules-with-agent") as stack:
        yield stack


@pytest.fixture(scope="module")
def stack(redis_server: RedisServer, policies_dir: Path) -> Iterator[Stack]:
    """No worker: nothing but the visitor, LiveKit and the token server act in a room."""
    with running_stack(
        redis_server.url, with_worker=False, env=_env(policies_dir), name="rules"
    ) as stack:
        yield stack


def _tracks(people: list[ParticipantInfo], identity: str) -> list[tuple[int, int]]:
    return [(t.type, t.source) for p in people if p.identity == identity for t in p.tracks]


# --- who may be in the room ----------------------------------------------------------------


async def test_a_third_participant_is_refused(staffed: Stack) -> None:
    """LiveKit does not count agents against max_participants: with the visitor and the
    agent in, the room is full for anyone else (limits.yaml: max_participants 1)."""
    async with visiting(issued(staffed, next(_visitors))) as visitor:
        assert await visitor.agent_speaks() >= 200
        info = await room_info(staffed, visitor.room_name)
        assert info.max_participants == 1
        kinds = sorted(p.kind for p in await participants(staffed, visitor.room_name))
        assert kinds == [ParticipantInfo.Kind.STANDARD, ParticipantInfo.Kind.AGENT]

        third = rtc.Room()
        with pytest.raises(rtc.ConnectError):
            await asyncio.wait_for(
                third.connect(
                    staffed.livekit_url, own_token(visitor.room_name, "third-participant")
                ),
                60,
            )
        await asyncio.sleep(1)
        present = {p.identity for p in await participants(staffed, visitor.room_name)}
        assert "third-participant" not in present and len(present) == 2
        assert third.connection_state != rtc.ConnectionState.CONN_CONNECTED
        assert "max participants" in staffed.logs()["livekit-server.log"]


# --- what the visitor may publish --------------------------------------------------------------


def _video(name: str) -> rtc.LocalVideoTrack:
    return rtc.LocalVideoTrack.create_video_track(name, rtc.VideoSource(64, 64))


def _microphone(name: str = "mic") -> rtc.LocalAudioTrack:
    return rtc.LocalAudioTrack.create_audio_track(name, rtc.AudioSource(48000, 1))


async def _publish(visitor: Visitor, track: rtc.LocalTrack, source: int) -> str | None:
    """The publication's sid, or None if the SDK says the publish failed."""
    options = rtc.TrackPublishOptions(source=source)  # type: ignore[arg-type]
    try:
        publication = await asyncio.wait_for(
            visitor.room.local_participant.publish_track(track, options), 60
        )
    except rtc.participant.PublishTrackError:
        return None
    return publication.sid


async def _published(stack: Stack, visitor: Visitor, kind: int, source: int) -> None:
    """The server lists the visitor's track of this kind and source."""

    async def listed() -> bool:
        people = await participants(stack, visitor.room_name)
        return (kind, source) in _tracks(people, visitor.room.local_participant.identity)

    await eventually(listed, 60, f"a track ({kind}, {source}) listed by RoomService")


async def test_microphone_is_published(stack: Stack) -> None:
    """The control case: the one source the grant names works."""
    async with visiting(issued(stack, next(_visitors))) as visitor:
        assert await _publish(visitor, _microphone(), rtc.TrackSource.SOURCE_MICROPHONE)
        await _published(stack, visitor, TrackType.AUDIO, TrackSource.MICROPHONE)


async def test_camera_and_screen_share_are_refused(stack: Stack) -> None:
    async with visiting(issued(stack, next(_visitors))) as visitor:
        camera = await _publish(visitor, _video("camera"), rtc.TrackSource.SOURCE_CAMERA)
        screen = await _publish(visitor, _video("screen"), rtc.TrackSource.SOURCE_SCREENSHARE)
        # LiveKit answers NOT_ALLOWED; the SDK (1.1.21) reports the publish as failed.
        assert camera is None and screen is None
        # A microphone published after them is listed: the server has dealt with all three.
        assert await _publish(visitor, _microphone(), rtc.TrackSource.SOURCE_MICROPHONE)
        await _published(stack, visitor, TrackType.AUDIO, TrackSource.MICROPHONE)
        people = await participants(stack, visitor.room_name)
        identity = visitor.room.local_participant.identity
        assert _tracks(people, identity) == [(TrackType.AUDIO, TrackSource.MICROPHONE)]
        assert "no permission to publish track" in stack.logs()["livekit-server.log"]


async def test_video_announced_as_microphone_never_reaches_the_room(stack: Stack) -> None:
    """The grant is checked on the source the client claims, never on the track's kind:
    LiveKit accepts a video track announced as "microphone" (the SDK reports success).
    The server offers no video codec (local_livekit: room.enabled_codecs), so that track
    never gets media and RoomService never lists it."""
    async with visiting(issued(stack, next(_visitors))) as visitor:
        await _publish(visitor, _video("not-a-mic"), rtc.TrackSource.SOURCE_MICROPHONE)
        assert await _publish(visitor, _microphone(), rtc.TrackSource.SOURCE_MICROPHONE)
        await _published(stack, visitor, TrackType.AUDIO, TrackSource.MICROPHONE)
        await asyncio.sleep(3)
        people = await participants(stack, visitor.room_name)
        identity = visitor.room.local_participant.identity
        assert _tracks(people, identity) == [(TrackType.AUDIO, TrackSource.MICROPHONE)]
        info = await room_info(stack, visitor.room_name)
        assert {c.mime.split("/")[0] for c in info.enabled_codecs} == {"audio"}


# --- who the visitor is ------------------------------------------------------------------------


async def _self_update(room: rtc.Room, n: int) -> None:
    """Metadata, name and attributes set by the participant itself; the SDK may raise or
    return without effect (1.1.21 returns), whichever: only the server's view counts."""
    me = room.local_participant
    for change in (
        me.set_metadata(f"metadata-{n}"),
        me.set_name(f"name-{n}"),
        me.set_attributes({"role": f"admin-{n}"}),
    ):
        with contextlib.suppress(Exception):
            await asyncio.wait_for(change, 20)


async def test_visitor_cannot_change_its_metadata_name_or_attributes(stack: Stack) -> None:
    # Control: a participant granted can_update_own_metadata (a token only we can mint),
    # in a room of its own, sees the same calls take effect in RoomService.
    control_room = "control-self-update"
    control = rtc.Room()
    await asyncio.wait_for(
        control.connect(
            stack.livekit_url,
            own_token(control_room, "control", can_update_own_metadata=True),
        ),
        60,
    )
    try:
        await _self_update(control, 1)

        async def control_changed() -> bool:
            (me,) = await participants(stack, control_room)
            return (me.metadata, me.name, dict(me.attributes)) == (
                "metadata-1", "name-1", {"role": "admin-1"},
            )  # fmt: skip

        waited = await eventually(control_changed, 30, "the control's own update")
    finally:
        await control.disconnect()

    async with visiting(issued(stack, next(_visitors))) as visitor:
        (before,) = await participants(stack, visitor.room_name)
        await _self_update(visitor.room, 2)
        await asyncio.sleep(max(3.0, 2 * waited))
        (after,) = await participants(stack, visitor.room_name)
        assert (after.metadata, after.name, dict(after.attributes)) == ("", "", {})
        assert (after.metadata, after.name, after.attributes) == (
            before.metadata, before.name, before.attributes,
        )  # fmt: skip
        assert not after.permission.can_update_metadata


# --- which room ------------------------------------------------------------------------------


async def _room_service(stack: Stack, token: str, method: str, body: dict[str, object]) -> int:
    async with httpx.AsyncClient(timeout=20) as client:
        response = await client.post(
            f"{stack.livekit.config.http_url}/twirp/livekit.{method}",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        )
    return response.status_code


async def _joined_room(stack: Stack, token: str, asked_for: str) -> str:
    """Join through the raw signalling socket asking for another room in the URL, as a
    hand-made client could; the room LiveKit's join answer names."""
    query = urlencode(
        {"access_token": token, "room": asked_for, "protocol": 16, "auto_subscribe": 0}
    )
    async with websockets.connect(f"{stack.livekit_url}/rtc?{query}") as socket:
        while True:
            message = SignalResponse()
            message.ParseFromString(await asyncio.wait_for(socket.recv(), 30))  # type: ignore[arg-type]
            if message.HasField("join"):
                return str(message.join.room.name)


async def test_the_token_is_good_for_its_own_room_only(stack: Stack) -> None:
    async with (
        visiting(issued(stack, next(_visitors))) as visitor,
        visiting(issued(stack, next(_visitors))) as neighbour,
    ):
        assert visitor.room.name == room_name(visitor.session_id) == visitor.room_name
        info = await room_info(stack, visitor.room_name)
        assert (info.max_participants, info.empty_timeout, info.departure_timeout) == (
            1, ROOM["empty_timeout_s"], ROOM["departure_timeout_s"],
        )  # fmt: skip
        token = visitor.token["participant_token"]
        other = neighbour.room_name
        me = visitor.room.local_participant.identity
        attempts = [
            ("RoomService/ListRooms", {}),
            ("RoomService/CreateRoom", {"name": "demo-made-by-visitor"}),
            ("RoomService/DeleteRoom", {"room": other}),
            ("RoomService/ListParticipants", {"room": other}),
            ("RoomService/RemoveParticipant", {"room": other, "identity": "anyone"}),
            ("RoomService/ListParticipants", {"room": visitor.room_name}),
            ("RoomService/UpdateParticipant",
             {"room": visitor.room_name, "identity": me, "metadata": "admin"}),
            ("AgentDispatchService/CreateDispatch",
             {"room": visitor.room_name, "agent_name": "any-agent"}),
        ]  # fmt: skip
        refused = {
            f"{method} {body}": await _room_service(stack, token, method, body)
            for method, body in attempts
        }
        assert refused == dict.fromkeys(refused, 401), refused
        assert await room_names(stack) >= {visitor.room_name, other}
        assert "demo-made-by-visitor" not in await room_names(stack)

        # A hand-made client naming the neighbour's room in the URL lands in its own.
        fresh = issued(stack, next(_visitors))
        assert await _joined_room(stack, fresh["participant_token"], other) == fresh["room_name"]
        assert len(await participants(stack, other)) == 1


# --- rooms nobody stays in ---------------------------------------------------------------------


async def _alone_in_the_stack(stack: Stack, r: redis.Redis) -> tuple[dict[str, Any], int]:
    """A token issued once earlier tests' rooms have finished (and their sessions closed),
    so the webhook counts and the day's minutes that follow are this test's alone; with
    everyone's seconds reserved today before it."""

    async def empty() -> bool:
        return not await room_names(stack)

    await eventually(empty, 60, "every earlier room to finish")
    await asyncio.sleep(2)
    everyone_before = everyone_today(r)
    return issued(stack, next(_visitors)), everyone_before


async def test_a_room_left_empty_finishes_and_its_webhook_closes_the_session(
    stack: Stack, redis_server: RedisServer
) -> None:
    r = redis_server.client()
    token, everyone_before = await _alone_in_the_stack(stack, r)
    before = webhook_counts(stack)
    session_id, room = token["session_id"], token["room_name"]
    reserved = session_record(r, session_id)
    assert holds_slot(r, session_id)
    assert minutes_counters(r, reserved) == (
        int(reserved["reserved_s"]), everyone_before + int(reserved["reserved_s"]),
    )  # fmt: skip

    async with visiting(token):
        assert room in await room_names(stack)
    left = asyncio.get_running_loop().time()

    async def gone() -> bool:
        return room not in await room_names(stack)

    await eventually(gone, 60, "the room to finish")
    # LiveKit counts whole seconds from the last departure.
    assert asyncio.get_running_loop().time() - left >= ROOM["departure_timeout_s"] - 1

    async def closed() -> bool:
        return "released_at" in session_record(r, session_id)

    await eventually(closed, 30, "LiveKit's room_finished to close the session")
    record = session_record(r, session_id)
    # No worker ever claimed it: ops/reconcile.py closes it as abandoned, timed from the
    # room's creation to LiveKit's event.
    assert (record["status"], record["end_reason"], record["release_reason"]) == (
        "abandoned", "abandoned", "abandoned",
    )  # fmt: skip
    used = int(record["used_s"])
    assert 0 < used <= 60
    assert int(record["refunded_s"]) == int(reserved["reserved_s"]) - used > 0
    assert not holds_slot(r, session_id)
    assert minutes_counters(r, record) == (used, everyone_before + used)

    await asyncio.sleep(2)  # anything still in flight from LiveKit
    assert session_record(r, session_id) == record
    assert counts_since(before, webhook_counts(stack)) == {
        ("room_started", "ignored"): 1,
        ("participant_joined", "ignored"): 1,
        ("participant_left", "ignored"): 1,
        ("room_finished", "abandoned"): 1,
    }
    log = stack.logs()["token-server.log"]
    assert log.count(f'"session abandoned", "session_id": "{session_id}"') == 1


async def test_an_unused_token_makes_no_room_and_is_swept_as_never_joined(
    stack: Stack, redis_server: RedisServer
) -> None:
    r = redis_server.client()
    token, everyone_before = await _alone_in_the_stack(stack, r)
    session_id = token["session_id"]
    reserved = session_record(r, session_id)
    assert holds_slot(r, session_id)

    async def closed() -> bool:
        assert token["room_name"] not in await room_names(stack)
        return "released_at" in session_record(r, session_id)

    window = SESSION["join_window_s"] + SESSION["lease_margin_s"]
    waited = await eventually(closed, window + 60, "the token server's never-joined sweeper")
    assert waited >= window - 2
    record = session_record(r, session_id)
    assert (record["status"], record["release_reason"]) == ("never_joined", "never_joined")
    assert int(record["refunded_s"]) == int(reserved["reserved_s"])
    assert not holds_slot(r, session_id)
    assert minutes_counters(r, record) == (0, everyone_before)

    # The ops command finds nothing more to close for it: closing happens once.
    env = {
        "REDIS_URL": redis_server.url,
        "POLICIES_DIR": stack.token_server.env["POLICIES_DIR"],
    }
    done = run_ops(env, "sweep", "--json")
    assert done.returncode == 0, done.stderr
    assert session_id not in done.stdout
    assert session_record(r, session_id) == record
    assert token["room_name"] not in await room_names(stack)
