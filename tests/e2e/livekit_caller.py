"""A visitor with LiveKit's Python SDK: a token from the real token server, a room joined
through the real livekit-server, a microphone published, the agent's voice received.

Used by the end-to-end tests that need no browser (what the server enforces, crashes,
capacity) and by the LiveKit benchmarks.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from livekit import rtc

SAMPLE_RATE = 48000
FRAME_SAMPLES = SAMPLE_RATE // 100  # 10 ms, what WebRTC sends
# RMS of int16 samples above which a received 10 ms frame is the agent speaking.
VOICE_RMS = 300.0


def request_token(base_url: str, persona: str, **headers: str) -> dict[str, Any]:
    response = httpx.post(f"{base_url}/api/token", json={"agent": persona}, headers=headers)
    assert response.status_code == 201, response.text
    grant: dict[str, Any] = response.json()
    return grant


@dataclass
class Caller:
    """One visitor in one room. `await caller.join(grant)`, then `agent_joined`,
    `first_voice` (when the agent's audio first carried voice) and `leave()`."""

    room: rtc.Room = field(default_factory=rtc.Room)
    source: rtc.AudioSource = field(
        default_factory=lambda: rtc.AudioSource(SAMPLE_RATE, 1, queue_size_ms=200)
    )
    agent_joined: asyncio.Event = field(default_factory=asyncio.Event)
    agent_voice: asyncio.Event = field(default_factory=asyncio.Event)
    agent_left: asyncio.Event = field(default_factory=asyncio.Event)
    first_voice: float | None = None  # time.monotonic()
    agent_identity: str | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def join(self, grant: dict[str, Any], *, publish: bool = True) -> Caller:
        self.room.on("participant_connected", self._participant)
        self.room.on("participant_disconnected", self._gone)
        self.room.on("track_subscribed", self._subscribed)
        await self.room.connect(grant["server_url"], grant["participant_token"])
        for participant in self.room.remote_participants.values():
            self._participant(participant)
        if publish:
            track = rtc.LocalAudioTrack.create_audio_track("microphone", self.source)
            options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
            await self.room.local_participant.publish_track(track, options)
            self._tasks.append(asyncio.create_task(self._silence()))
        return self

    def _participant(self, participant: rtc.RemoteParticipant) -> None:
        if participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            self.agent_identity = participant.identity
            self.agent_joined.set()

    def _gone(self, participant: rtc.RemoteParticipant) -> None:
        if participant.identity == self.agent_identity:
            self.agent_left.set()

    def _subscribed(
        self, track: rtc.Track, _pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO and participant.identity == self.agent_identity:
            self._tasks.append(asyncio.create_task(self._listen(track)))

    async def _listen(self, track: rtc.Track) -> None:
        stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1)
        async for event in stream:
            samples = np.frombuffer(event.frame.data, dtype=np.int16).astype(np.float64)
            if samples.size and float(np.sqrt(np.mean(samples**2))) > VOICE_RMS:
                if self.first_voice is None:
                    self.first_voice = time.monotonic()
                self.agent_voice.set()

    async def _silence(self) -> None:
        # A live microphone sends frames all the time, silent or not.
        frame = rtc.AudioFrame(bytes(FRAME_SAMPLES * 2), SAMPLE_RATE, 1, FRAME_SAMPLES)
        while True:
            await self.source.capture_frame(frame)

    async def leave(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.room.disconnect()
