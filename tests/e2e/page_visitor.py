"""A visitor that talks and reads what the worker sends the page, with LiveKit's Python SDK.

Extends tests.e2e.livekit_caller.Caller (a token from the real token server, a room joined
through the real livekit-server): its microphone says lines (espeak-ng speech) and is
silent otherwise; it keeps every text stream the page would get (the `lk.transcription`
transcript and our `ocf.recap` and `ocf.latency` messages) with when it arrived, and the
agent's `lk.agent.state` as it changes. With `preconnect=` it plays livekit-client's part
of the pre-connect buffer: the microphone is published with the TF_PRECONNECT_BUFFER
feature and what it heard before the agent joined goes to the agent, once the agent is
active, as the `lk.agent.pre-connect-audio-buffer` byte stream (livekit-client 2.x,
LocalParticipant.publishTrack, does exactly this).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from livekit import rtc

from agent.ending import END_REASON_ATTRIBUTE
from tests.e2e.livekit_caller import FRAME_SAMPLES, SAMPLE_RATE, Caller
from tests.fakes.speech_audio import speech, trim_silence

TOPICS = ("lk.transcription", "ocf.recap", "ocf.latency")
STATE_ATTRIBUTE = "lk.agent.state"
PRE_CONNECT_TOPIC = "lk.agent.pre-connect-audio-buffer"


@dataclass
class Received:
    """One text stream: its topic and sender, when it opened and closed, its text."""

    topic: str
    sender: str
    opened: float  # time.monotonic()
    attributes: dict[str, str]
    text: str = ""
    closed: float | None = None


@dataclass
class Said:
    text: str
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    ended_at: float | None = None  # time.monotonic() of the last sample sent


@dataclass
class PageVisitor(Caller):
    streams: list[Received] = field(default_factory=list)
    states: list[tuple[float, str]] = field(default_factory=list)
    end_reason_at: float | None = None  # when the agent's `ocf.end_reason` attribute came
    agent_active: asyncio.Event = field(default_factory=asyncio.Event)
    agent_active_at: float | None = None  # time.monotonic()
    agent_left_at: float | None = None  # the agent left, or its room was deleted
    preconnect_sent: asyncio.Event = field(default_factory=asyncio.Event)
    _queue: deque[tuple[np.ndarray, Said]] = field(default_factory=deque)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def enter(
        self, grant: dict[str, Any], *, preconnect: np.ndarray | None = None
    ) -> PageVisitor:
        """Join and publish the microphone; `preconnect`: what the microphone heard before
        the agent was in the room (48 kHz int16), that only the pre-connect buffer carries."""
        for topic in TOPICS:
            self.room.register_text_stream_handler(topic, self._stream)
        self.room.on("participant_active", self._active)
        self.room.on("participant_attributes_changed", self._attributes)
        self.room.on("participant_disconnected", self._left)
        self.room.on("disconnected", lambda *_: self._gone_at_once())
        await self.join(grant, publish=False)
        for participant in self.room.remote_participants.values():
            self._active(participant)
        track = rtc.LocalAudioTrack.create_audio_track("microphone", self.source)
        options = rtc.TrackPublishOptions(
            source=rtc.TrackSource.SOURCE_MICROPHONE, preconnect_buffer=preconnect is not None
        )
        publication = await self.room.local_participant.publish_track(track, options)
        self._tasks.append(asyncio.create_task(self._microphone()))
        if preconnect is not None:
            self._tasks.append(asyncio.create_task(self._send_buffer(publication.sid, preconnect)))
        return self

    @staticmethod
    def spoken(text: str, language: str) -> np.ndarray:
        """A line as the microphone hears it (espeak-ng), for `say` or a pre-connect buffer."""
        return trim_silence(speech(text, language, SAMPLE_RATE, flowing=True))

    # --- what the visitor says -------------------------------------------------------------

    def say(self, text: str, language: str) -> Said:
        said = Said(text)
        self._queue.append((self.spoken(text, language), said))
        return said

    async def _microphone(self) -> None:
        silent = rtc.AudioFrame(bytes(FRAME_SAMPLES * 2), SAMPLE_RATE, 1, FRAME_SAMPLES)
        while True:
            if not self._queue:
                await self.source.capture_frame(silent)
                continue
            samples, said = self._queue.popleft()
            for start in range(0, samples.size, FRAME_SAMPLES):
                chunk = np.zeros(FRAME_SAMPLES, dtype=np.int16)
                part = samples[start : start + FRAME_SAMPLES]
                chunk[: part.size] = part
                frame = rtc.AudioFrame(chunk.tobytes(), SAMPLE_RATE, 1, FRAME_SAMPLES)
                await self.source.capture_frame(frame)
            said.ended_at = time.monotonic()
            said.ended.set()

    async def _send_buffer(self, track_sid: str, samples: np.ndarray) -> None:
        # livekit-client waits for an active agent, then streams the buffer to it alone.
        await self.agent_active.wait()
        assert self.agent_identity is not None
        writer = await self.room.local_participant.stream_bytes(
            "preconnect-buffer",
            topic=PRE_CONNECT_TOPIC,
            mime_type="audio/pcm",
            destination_identities=[self.agent_identity],
            attributes={"trackId": track_sid, "sampleRate": str(SAMPLE_RATE), "channels": "1"},
        )
        data = samples.astype(np.int16).tobytes()
        for start in range(0, len(data), 32_000):
            await writer.write(data[start : start + 32_000])
        await writer.aclose()
        self.preconnect_sent.set()

    # --- what the page receives -------------------------------------------------------------

    def _stream(self, reader: rtc.TextStreamReader, sender: str) -> None:
        info = reader.info
        received = Received(info.topic, sender, time.monotonic(), dict(info.attributes or {}))
        self.streams.append(received)
        self._tasks.append(asyncio.create_task(self._read(reader, received)))

    async def _read(self, reader: rtc.TextStreamReader, received: Received) -> None:
        async for chunk in reader:
            received.text += chunk
        received.closed = time.monotonic()
        self._wake()

    def _active(self, participant: rtc.RemoteParticipant) -> None:
        if participant.kind != rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            return
        self.agent_identity = participant.identity
        self.agent_joined.set()
        if participant.state == rtc.ParticipantState.PARTICIPANT_STATE_ACTIVE:
            if self.agent_active_at is None:
                self.agent_active_at = time.monotonic()
            self.agent_active.set()

    def _attributes(self, changed: dict[str, str], participant: rtc.Participant) -> None:
        if participant.identity != self.agent_identity:
            return
        if STATE_ATTRIBUTE in changed:
            self.states.append((time.monotonic(), changed[STATE_ATTRIBUTE]))
        if END_REASON_ATTRIBUTE in changed and self.end_reason_at is None:
            self.end_reason_at = time.monotonic()
        self._wake()

    def _left(self, participant: rtc.RemoteParticipant) -> None:
        if participant.identity == self.agent_identity:
            self._gone_at_once()

    def _gone_at_once(self) -> None:
        if self.agent_left_at is None:
            self.agent_left_at = time.monotonic()
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def until(self, check: Any, timeout: float, what: str) -> None:
        """Wait until `check()` holds (re-checked whenever something arrives)."""
        deadline = time.monotonic() + timeout
        while not check():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))
            except TimeoutError:
                pass

    async def agent_replied(self, since: float, timeout: float) -> None:
        """The agent spoke after `since` and is listening again."""

        def done() -> bool:
            later = [state for at, state in self.states if at > since]
            return "speaking" in later and later[-1] == "listening"

        await self.until(done, timeout, "the agent to answer and listen again")

    def received(self, topic: str, sender: str | None = None) -> list[Received]:
        return [s for s in self.streams if s.topic == topic and sender in (None, s.sender)]
