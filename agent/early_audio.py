"""What the visitor said before the agent joined is heard, not drowned by the greeting.

The page's microphone starts with livekit-client's pre-connect buffer: what the visitor
says before the agent is in the room is recorded, and sent to the agent once it is (the
`lk.agent.pre-connect-audio-buffer` byte stream). livekit-agents' RoomIO takes it and
pushes it into the session ahead of the live audio, in one burst when it arrives.

The session, though, hears the caller as silence during the first seconds the agent speaks
(its AEC warm-up: the echo of the agent's own voice must not be taken for the caller),
whenever that audio was recorded. A burst arriving just after the greeting started would
reach the STT as silence, and the visitor's first words would be lost. So when the
visitor's microphone says a buffer is coming (TF_PRECONNECT_BUFFER), the greeting waits
until the first of the visitor's audio, the buffer's, has reached the session (at most the
pre-connect timeout); without a buffer it is said at once, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from livekit import rtc
from livekit.agents import AgentSession
from livekit.agents.voice.io import AudioInput
from livekit.rtc._proto.track_pb2 import AudioTrackFeature


class FirstFrame(AudioInput):
    """The session's audio input, passed through; `heard` is set at its first frame."""

    def __init__(self, source: AudioInput) -> None:
        super().__init__(label="FirstFrame", source=source)
        self.heard = asyncio.Event()

    async def __anext__(self) -> rtc.AudioFrame:
        frame = await super().__anext__()
        self.heard.set()
        return frame


def _microphone(visitor: rtc.RemoteParticipant) -> rtc.RemoteTrackPublication | None:
    return next(
        (
            p
            for p in visitor.track_publications.values()
            if p.source == rtc.TrackSource.SOURCE_MICROPHONE
        ),
        None,
    )


async def _microphone_of(
    room: rtc.Room, visitor: rtc.RemoteParticipant
) -> rtc.RemoteTrackPublication:
    """The visitor's microphone, once published (the page publishes it as it connects,
    usually before the agent is in the room)."""
    published: asyncio.Future[rtc.RemoteTrackPublication] = asyncio.Future()

    def on_published(
        publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        if participant.identity == visitor.identity and not published.done():
            if publication.source == rtc.TrackSource.SOURCE_MICROPHONE:
                published.set_result(publication)

    room.on("track_published", on_published)
    try:
        if (publication := _microphone(visitor)) is not None:
            return publication
        return await published
    finally:
        room.off("track_published", on_published)


async def wait_for_early_audio(
    session: AgentSession[Any], room: rtc.Room, visitor: Awaitable[rtc.RemoteParticipant]
) -> None:
    """Before the greeting: if the visitor's microphone has a pre-connect buffer, wait until
    it has reached the session. `visitor`: the visitor once the agent is in the room (the
    job's wait_for_participant; the visitor was there first). Unbounded: the caller sets
    the limit (the pre-connect timeout RoomIO waits for the buffer)."""
    publication = await _microphone_of(room, await visitor)
    if AudioTrackFeature.TF_PRECONNECT_BUFFER not in publication.audio_features:
        return  # no buffer coming: greet at once
    source = session.input.audio
    if source is None:
        return
    gate = source if isinstance(source, FirstFrame) else FirstFrame(source)
    session.input.audio = gate
    await gate.heard.wait()
