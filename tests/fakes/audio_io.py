"""The caller's side of a call, for `session.input.audio` / `session.output.audio`.

`CallerMicrophone` is a microphone: it delivers a frame every `frame_ms`, in real time,
forever (faint noise while the caller is quiet, as a real line does), and plays the
caller's sentences (espeak-ng speech) when asked. For each sentence it knows when the
speech ended *in the audio* (the last voiced sample), the instant latency is measured from.

`CallerSpeaker` is the caller's loudspeaker: it accepts the agent's frames as RoomIO's
output does (any speed, played out in real time, pausable), keeps every frame with the
time it arrived, reports `playback_started`/`playback_finished` so the agent knows what was
heard, and stops at once on `clear_buffer()` (barge-in).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np
from livekit import rtc
from livekit.agents.voice.io import AudioInput, AudioOutput, AudioOutputCapabilities

from tests.fakes.speech_audio import speech, trim_silence

# RoomIO's defaults: the agent hears and speaks 24 kHz mono.
SAMPLE_RATE = 24000
VOICED = 200  # |sample| above this counts as speech when dating the end of a sentence


@dataclass
class Spoken:
    """One sentence the caller said."""

    text: str
    samples: np.ndarray
    started_wall: float | None = None  # when its first sample was delivered
    speech_end_wall: float | None = None  # when its last voiced sample was delivered
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def duration_s(self) -> float:
        return self.samples.size / SAMPLE_RATE


class CallerMicrophone(AudioInput):
    def __init__(
        self,
        *,
        frame_ms: int = 20,
        noise_level: int = 20,
        sample_rate: int = SAMPLE_RATE,
        seed: int = 7,
    ) -> None:
        super().__init__(label="CallerMicrophone")
        self.sample_rate = sample_rate
        self.frame_samples = sample_rate * frame_ms // 1000
        self.frame_s = self.frame_samples / sample_rate
        # One second of line noise, played in a loop: drawing fresh noise for every frame
        # cost more CPU than everything else the microphone does, and a benchmark charges
        # the microphone's CPU to the call it feeds (bench/concurrency.py).
        rng = np.random.default_rng(seed)
        # (a whole number of frames: each frame's noise is one slice, no wrapping)
        frames_per_second = -(-sample_rate // self.frame_samples)
        self._noise = (
            rng.normal(0, noise_level / 3, frames_per_second * self.frame_samples)
            .clip(-32768, 32767)
            .astype(np.int16)
        )
        self._noise_at = 0
        self._queue: list[Spoken] = []
        self._current: Spoken | None = None
        self._offset = 0
        self._t0: float | None = None
        self._delivered = 0
        self._closed = False
        self.spoken: list[Spoken] = []

    # -- what the caller says -------------------------------------------------------------
    def say(self, text: str, language: str) -> Spoken:
        """Queue a sentence; it starts right after what is already queued."""
        samples = trim_silence(speech(text, language, self.sample_rate, flowing=True))
        item = Spoken(text=text, samples=samples)
        self._queue.append(item)
        self.spoken.append(item)
        return item

    async def say_and_wait(self, text: str, language: str) -> Spoken:
        item = self.say(text, language)
        await item.done.wait()
        return item

    @property
    def speaking(self) -> bool:
        return self._current is not None or bool(self._queue)

    def close(self) -> None:
        """The caller hangs up the microphone: the stream ends."""
        self._closed = True

    # -- the stream the agent reads -------------------------------------------------------
    async def __anext__(self) -> rtc.AudioFrame:
        if self._closed:
            raise StopAsyncIteration
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        # a frame is delivered once it has been "recorded": real time, never ahead of it
        due = self._t0 + (self._delivered + 1) * self.frame_s
        if due > now:
            await asyncio.sleep(due - now)
        if self._closed:
            raise StopAsyncIteration
        self._delivered += 1
        delivered_at = time.monotonic()
        return rtc.AudioFrame(
            data=self._next_samples(delivered_at).tobytes(),
            sample_rate=self.sample_rate,
            num_channels=1,
            samples_per_channel=self.frame_samples,
        )

    def _next_samples(self, delivered_at: float) -> np.ndarray:
        n = self.frame_samples
        out = self._noise[self._noise_at : self._noise_at + n].copy()
        self._noise_at = (self._noise_at + n) % self._noise.size
        filled = 0
        while filled < n:
            if self._current is None:
                if not self._queue:
                    break
                self._current = self._queue.pop(0)
                self._offset = 0
                # the sentence's first sample sits `filled` samples into this frame
                self._current.started_wall = delivered_at - (n - filled) / self.sample_rate
            item = self._current
            take = min(n - filled, item.samples.size - self._offset)
            chunk = item.samples[self._offset : self._offset + take]
            out[filled : filled + take] = np.clip(
                out[filled : filled + take].astype(np.int32) + chunk, -32768, 32767
            )
            loud = np.flatnonzero(np.abs(chunk.astype(np.int32)) > VOICED)
            if loud.size:
                last = filled + int(loud[-1]) + 1
                item.speech_end_wall = delivered_at - (n - last) / self.sample_rate
            self._offset += take
            filled += take
            if self._offset >= item.samples.size:
                item.done.set()
                self._current = None
        return out


@dataclass
class Segment:
    """One stretch of agent speech: from its first frame to flush() or clear_buffer()."""

    index: int
    first_frame_wall: float
    frames: list[tuple[float, float]] = field(default_factory=list)  # (arrival, duration)
    audio: bytearray = field(default_factory=bytearray)
    flushed_wall: float | None = None
    finished_wall: float | None = None
    cleared_wall: float | None = None
    paused_walls: list[float] = field(default_factory=list)
    interrupted: bool = False
    playback_position: float = 0.0

    @property
    def duration_s(self) -> float:
        return sum(d for _, d in self.frames)

    @property
    def stopped_wall(self) -> float | None:
        """When the caller stopped hearing it early: paused (RoomIO pauses on a possible
        interruption) or cleared, whichever came first."""
        times = [*self.paused_walls, *([self.cleared_wall] if self.cleared_wall else [])]
        return min(times) if times else None

    def samples(self) -> np.ndarray:
        return np.frombuffer(bytes(self.audio), dtype=np.int16)


class CallerSpeaker(AudioOutput):
    def __init__(self, *, sample_rate: int = SAMPLE_RATE) -> None:
        super().__init__(
            label="CallerSpeaker",
            capabilities=AudioOutputCapabilities(pause=True),
            sample_rate=sample_rate,
        )
        self.segments: list[Segment] = []
        self._segment: Segment | None = None
        self._play_start: float = 0.0  # when the current segment began playing
        self._play_end: float = 0.0  # when what has been captured will have played
        self._paused_at: float | None = None
        self._finish_timer: asyncio.TimerHandle | None = None
        self.new_segment = asyncio.Event()  # set at each segment's first frame

    # -- the AudioOutput contract --------------------------------------------------------
    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        now = time.monotonic()
        if self._segment is None:
            self._segment = Segment(index=len(self.segments), first_frame_wall=now)
            self.segments.append(self._segment)
            self._play_start = self._play_end = now
            self.on_playback_started(created_at=time.time())
            self.new_segment.set()
        if self._finish_timer is not None:  # more audio after a flush: keep playing
            self._finish_timer.cancel()
            self._finish_timer = None
        # each frame plays once the previous one has (a late frame leaves a gap)
        start = max(self._play_end, now if self._paused_at is None else self._play_end)
        self._play_end = start + frame.duration
        self._segment.frames.append((now, frame.duration))
        self._segment.audio += frame.data.tobytes()

    def flush(self) -> None:
        super().flush()
        segment = self._segment
        if segment is None:
            return
        segment.flushed_wall = time.monotonic()
        self._schedule_finish()

    def clear_buffer(self) -> None:
        segment = self._segment
        if segment is None:
            return
        now = time.monotonic()
        segment.cleared_wall = now
        self._finish(interrupted=True, position=self._position(now))

    def pause(self) -> None:
        super().pause()
        if self._paused_at is None:
            self._paused_at = time.monotonic()
            if self._segment is not None:
                self._segment.paused_walls.append(self._paused_at)
            if self._finish_timer is not None:
                self._finish_timer.cancel()
                self._finish_timer = None

    def resume(self) -> None:
        super().resume()
        if self._paused_at is not None:
            shift = time.monotonic() - self._paused_at
            self._paused_at = None
            self._play_end += shift
            self._play_start += shift
            if self._segment is not None and self._segment.flushed_wall is not None:
                self._schedule_finish()

    # -- playout -------------------------------------------------------------------------
    def _position(self, now: float) -> float:
        if self._segment is None:
            return 0.0
        at = self._paused_at if self._paused_at is not None else now
        return max(0.0, min(self._segment.duration_s, at - self._play_start))

    def _schedule_finish(self) -> None:
        if self._paused_at is not None:
            return  # resume() schedules it
        delay = max(0.0, self._play_end - time.monotonic())
        self._finish_timer = asyncio.get_running_loop().call_later(
            delay, lambda: self._finish(interrupted=False, position=None)
        )

    def _finish(self, *, interrupted: bool, position: float | None) -> None:
        segment = self._segment
        if segment is None:
            return
        if self._finish_timer is not None:
            self._finish_timer.cancel()
            self._finish_timer = None
        segment.finished_wall = time.monotonic()
        segment.interrupted = interrupted
        segment.playback_position = segment.duration_s if position is None else position
        self._segment = None
        self._paused_at = None
        self.on_playback_finished(
            playback_position=segment.playback_position, interrupted=interrupted
        )

    # -- what the caller heard -----------------------------------------------------------
    @property
    def playing(self) -> bool:
        return self._segment is not None

    def first_frame_after(self, wall: float) -> float | None:
        """Arrival time of the first agent frame captured after `wall`."""
        for segment in self.segments:
            for arrived, _ in segment.frames:
                if arrived >= wall:
                    return arrived
        return None

    async def wait_for_segment_after(self, wall: float, timeout: float) -> Segment:
        deadline = time.monotonic() + timeout
        while True:
            for segment in self.segments:
                if segment.first_frame_wall >= wall:
                    return segment
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the agent did not speak")
            self.new_segment.clear()
            try:
                await asyncio.wait_for(self.new_segment.wait(), remaining)
            except TimeoutError:
                continue

    def describe(self, since: float = 0.0) -> str:
        return "; ".join(
            f"segment {s.index} at {s.first_frame_wall - since:.2f}s {s.duration_s:.2f}s"
            + (" interrupted" if s.interrupted else "")
            for s in self.segments
        )

    async def wait_until_quiet(self, timeout: float) -> None:
        """Until the current segment has finished playing (or was cut)."""
        deadline = time.monotonic() + timeout
        while self._segment is not None:
            if time.monotonic() > deadline:
                raise TimeoutError("the agent is still speaking")
            await asyncio.sleep(0.02)
