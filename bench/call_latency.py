"""Voice latency through the real LiveKit path, side by side with the in-process figure.

A caller joins a real livekit-server with LiveKit's Python SDK (`livekit.rtc`), as the demo
page does: a token from the real token server (`POST /api/token`), then the room; it
publishes its microphone (the caller's lines of bench/voice_latency.py, espeak-ng speech,
in real time with a pause after each answer) and listens to the agent's track. The agent
is `python -m agent start`, the real worker with the real plugins pointed at the vendor
fakes in their own process, at bench/voice_latency.py's default vendor delays
(tests/e2e/livekit_stack.py: running_stack). Each turn is timed at the caller, from the last
voiced sample it sends to the first agent audio it receives (a received frame with a
sample above the caller's own voiced level).

In the same run, interleaved in rounds, the in-process figure (bench/voice_latency.py:
the worker's call assembly with the caller's microphone and loudspeaker in place of the
room, against the same fakes process), so the two paths are compared under one load:

    overhead = measured - ideal        (ideal: bench/voice_latency.py's, default settings)
    WebRTC hop = (through LiveKit) - (in-process), at p50 and p95

The fakes' timeline (one time.monotonic() clock for every process on the machine) splits
a turn: the caller's end of speech -> the Deepgram fake hears it (the way in: caller's
audio source, Opus, livekit-server, the worker's jitter buffer and RoomIO) and the TTS
fake's first byte -> first audio at the caller (the way out).

Runs only where nothing but 127.0.0.0/8 exists: outside scripts/offline it re-executes
itself through it.

    .venv/bin/python -m bench.call_latency [--turns 16] [--rounds 4] [--clicks 16]
        [--caller-frame-ms 10] [--caller-queue-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from livekit import api, rtc

from agent.conversation import TurnSettings, default_conversation
from bench.voice_latency import (
    CALLER_LINES,
    PERSONA,
    REPLY,
    STAGES,
    Delays,
    Result,
    answered,
    ideal_latency,
    ms,
    percentile,
    run_turns,
    stage_times,
)
from tests.e2e.livekit_stack import (
    API_KEY,
    API_SECRET,
    require_offline,
    running_stack,
)
from tests.fakes.audio_io import SAMPLE_RATE, VOICED, CallerMicrophone, Spoken
from tests.fakes.server import RemoteFakes
from tests.fakes.speech_audio import speech
from tests.server.support import roomy_caps
from tests.support import RedisServer, write_policies
from tests.voice.harness import shared_vad

ROOT = Path(__file__).resolve().parents[1]  # the repo root: where `-m bench.<name>` runs

TARGET_OVERHEAD_P95_S = 0.100
# The caller's microphone rate: what a browser captures and Opus codes natively.
CALLER_SAMPLE_RATE = 48000
# Voice is in a received frame when a sample rises above the level at which the caller's
# own speech counts as voiced (tests/fakes/audio_io.py): the same bar at both ends.
EAR_THRESHOLD = VOICED
# Silence from the agent, at the caller, before the caller speaks again (espeak-ng's
# pauses at punctuation inside one answer are up to ~400 ms).
QUIET_S = 0.8
# The agent joins within this time of the caller, or it was not dispatched (the worker
# declined the job: see LiveKitRun.unanswered); the caller then calls again, for so long.
AGENT_JOIN_S = 10.0
CALLING_FOR_S = 300.0
# What the caller says to time LiveKit alone (a short line: its onset is what is timed).
CLICK_LINE = "Yes."


def ensure_offline() -> None:
    """Run inside scripts/offline: re-execute this bench through it when not isolated."""
    try:
        require_offline()
    except RuntimeError:
        if os.environ.get("OCF_OFFLINE"):
            raise  # already inside and still not isolated: never loop
        # the bench being run (this one, or a bench importing this function), by module name
        main = sys.modules["__main__"].__spec__
        if main is None:
            raise RuntimeError("run the benchmarks as modules: python -m bench.<name>") from None
        offline = str(ROOT / "scripts" / "offline")
        sys.stdout.flush()
        os.chdir(ROOT)  # where `-m bench.<name>` resolves
        os.execv(offline, [offline, sys.executable, "-m", main.name, *sys.argv[1:]])


# -- what the caller hears --------------------------------------------------------------


def voiced(samples: np.ndarray, threshold: int = EAR_THRESHOLD) -> bool:
    return bool(samples.size) and int(np.abs(samples.astype(np.int32)).max()) > threshold


@dataclass
class AgentEar:
    """The agent's audio as the caller receives it: when each voiced frame arrived."""

    threshold: int = EAR_THRESHOLD
    voiced_walls: list[float] = field(default_factory=list)
    frames: int = 0
    _heard: asyncio.Event = field(default_factory=asyncio.Event)

    def hear(self, samples: np.ndarray, arrived: float) -> None:
        self.frames += 1
        if voiced(samples, self.threshold):
            self.voiced_walls.append(arrived)
            self._heard.set()

    def first_voiced_after(self, wall: float) -> float | None:
        return next((t for t in self.voiced_walls if t >= wall), None)

    def quiet_for(self, now: float) -> float:
        """Seconds since the last voiced frame (all the time there was, if none yet)."""
        return now - self.voiced_walls[-1] if self.voiced_walls else float("inf")

    async def wait_for_voice_after(self, wall: float, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while (found := self.first_voiced_after(wall)) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the agent did not speak")
            self._heard.clear()
            try:
                await asyncio.wait_for(self._heard.wait(), remaining)
            except TimeoutError:
                continue
        return found

    async def wait_until_quiet(self, quiet_s: float, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while (gap := self.quiet_for(time.monotonic())) < quiet_s:
            if time.monotonic() > deadline:
                raise TimeoutError("the agent is still speaking")
            await asyncio.sleep(quiet_s - gap + 0.01)


# -- the caller, through LiveKit --------------------------------------------------------


@dataclass(frozen=True)
class CallerSettings:
    frame_ms: int
    # the SDK's AudioSource queue (livekit.rtc's default: 1000 ms): frames leave it on a
    # 10 ms tick, so what waits in it is latency; 0: no queue, each 10 ms frame goes
    # straight to WebRTC's encoder, as a browser's microphone does
    queue_ms: int
    sample_rate: int = CALLER_SAMPLE_RATE


class SdkParticipant:
    """A room participant with LiveKit's Python SDK: a microphone it publishes (the
    caller's lines, in real time) and ears on the audio it receives: `ear` on all of it,
    `ears` on each other participant's."""

    def __init__(
        self,
        mic: CallerSettings | None,
        *,
        listen_rate: int = CALLER_SAMPLE_RATE,
        listen_frame_ms: int | None = None,
    ) -> None:
        self.listen_rate = listen_rate
        self.listen_frame_ms = listen_frame_ms
        self.mic: CallerMicrophone | None = None
        self.source: rtc.AudioSource | None = None
        if mic is not None:
            self.mic = CallerMicrophone(frame_ms=mic.frame_ms, sample_rate=mic.sample_rate)
            self.source = rtc.AudioSource(mic.sample_rate, 1, queue_size_ms=mic.queue_ms)
        self.ear = AgentEar()
        self.ears: dict[str, AgentEar] = {}
        self.room = rtc.Room()
        self._tasks: list[asyncio.Task[None]] = []
        self.room.on("track_subscribed", self._on_track)

    async def connect(self, url: str, token: str) -> None:
        await self.room.connect(url, token)
        if self.source is not None:
            track = rtc.LocalAudioTrack.create_audio_track("microphone", self.source)
            await self.room.local_participant.publish_track(
                track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
            )
            self._tasks.append(asyncio.create_task(self._speak()))

    def _on_track(self, track: Any, publication: Any, participant: Any) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            ear = self.ears.setdefault(participant.identity, AgentEar())
            self._tasks.append(asyncio.create_task(self._listen(track, ear)))

    async def _speak(self) -> None:
        assert self.mic is not None and self.source is not None
        # every frame goes to the SDK the moment the microphone has "recorded" it
        async for frame in self.mic:
            await self.source.capture_frame(frame)

    async def _listen(self, track: Any, ear: AgentEar) -> None:
        stream = rtc.AudioStream(
            track,
            sample_rate=self.listen_rate,
            num_channels=1,
            frame_size_ms=self.listen_frame_ms,
        )
        try:
            async for event in stream:
                arrived = time.monotonic()
                samples = np.frombuffer(event.frame.data, dtype=np.int16)
                self.ear.hear(samples, arrived)
                ear.hear(samples, arrived)
        finally:
            await stream.aclose()

    def say(self, line: str) -> Spoken:
        assert self.mic is not None
        return self.mic.say(line, "en")

    async def turn(self, line: str, timeout: float) -> tuple[float, float] | None:
        """Say `line`; (its last voiced sample, the first voiced frame heard after it) as
        time.monotonic() walls, or None when no answer came within `timeout`."""
        return await answered(
            self.say(line), lambda wall: self.ear.wait_for_voice_after(wall, timeout)
        )

    async def jitter_buffer_ms(self) -> tuple[float, float] | None:
        """The WebRTC receive stats of the audio this participant got: mean jitter buffer
        delay and mean target delay per sample played out (ms), or None without audio."""
        stats = await self.room.get_rtc_stats()
        for item in [*stats.subscriber_stats, *stats.publisher_stats]:
            if item.WhichOneof("stats") != "inbound_rtp":
                continue
            if item.inbound_rtp.stream.kind != "audio":
                continue
            inbound = item.inbound_rtp.inbound
            if inbound.jitter_buffer_emitted_count:
                count = inbound.jitter_buffer_emitted_count
                return (
                    1000 * inbound.jitter_buffer_delay / count,
                    1000 * inbound.jitter_buffer_target_delay / count,
                )
        return None

    async def leave(self) -> None:
        if self.mic is not None:
            self.mic.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.room.disconnect()
        if self.source is not None:
            await self.source.aclose()


async def request_token(base_url: str) -> dict[str, Any]:
    """POST /api/token as the demo page does."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        res = await http.post("/api/token", json={"agent": PERSONA})
    if res.status_code != 201:
        raise RuntimeError(f"token refused: {res.status_code} {res.text}")
    grant: dict[str, Any] = res.json()
    return grant


@dataclass
class LiveKitRun:
    result: Result
    jitter_buffers: list[tuple[float, float]] = field(default_factory=list)
    # calls no agent joined: livekit-agents declines jobs while the machine's CPU is
    # saturated (its load threshold cannot exceed 1), the caller then calls again
    unanswered: int = 0


async def answered_call(base_url: str, settings: CallerSettings, run: LiveKitRun) -> SdkParticipant:
    """A caller in a room with the agent, its greeting heard to the end."""
    give_up = time.monotonic() + CALLING_FOR_S
    while time.monotonic() < give_up:
        # the worker judges its load on the machine's last 2.5 s of CPU: let the
        # in-process call's burst pass first
        await asyncio.sleep(3.0)
        caller = SdkParticipant(settings)
        grant = await request_token(base_url)
        await caller.connect(grant["server_url"], grant["participant_token"])
        deadline = time.monotonic() + AGENT_JOIN_S
        while not caller.room.remote_participants and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if not caller.room.remote_participants:
            run.unanswered += 1
            await caller.leave()
            continue
        try:
            await caller.ear.wait_for_voice_after(0.0, 60)
            await caller.ear.wait_until_quiet(QUIET_S, 30)
        except TimeoutError:
            await caller.leave()
            raise
        return caller
    raise RuntimeError(
        f"no agent answered for {CALLING_FOR_S:.0f} s ({run.unanswered} calls unanswered): "
        "is the machine's CPU saturated? (test-output/e2e/call-latency/)"
    )


async def livekit_turns(
    base_url: str, settings: CallerSettings, run: LiveKitRun, count: int, offset: int
) -> None:
    caller = await answered_call(base_url, settings, run)
    result = run.result
    try:
        for i in range(count):
            turn = await caller.turn(CALLER_LINES[(offset + i) % len(CALLER_LINES)], 10)
            if turn is None:
                result.missed += 1
                continue
            speech_end, heard = turn
            result.latencies.append(heard - speech_end)
            result.walls.append((speech_end, heard, None))
            await caller.ear.wait_until_quiet(QUIET_S, 30)
        if (jitter := await caller.jitter_buffer_ms()) is not None:
            run.jitter_buffers.append(jitter)
    finally:
        await caller.leave()


# -- LiveKit alone: one SDK participant to others, no agent -------------------------------


@dataclass(frozen=True)
class Listener:
    """How a participant receives audio: `AudioStream`'s rate and frame size."""

    label: str
    sample_rate: int
    frame_ms: int | None  # None: as WebRTC plays it out (10 ms)


def listeners(turns: TurnSettings) -> list[Listener]:
    """The caller; the agent's RoomIO as configured (agent/conversation.yaml); and RoomIO
    in 10 ms frames, to price the agent's frame size on this path."""
    rate = turns.input_sample_rate
    khz = rate // 1000
    return [
        Listener(f"caller ({CALLER_SAMPLE_RATE // 1000} kHz, 10 ms)", CALLER_SAMPLE_RATE, None),
        Listener(
            f"agent's RoomIO ({khz} kHz, {turns.input_frame_ms} ms)", rate, turns.input_frame_ms
        ),
        Listener(f"RoomIO in 10 ms frames ({khz} kHz)", rate, 10),
    ]


@dataclass(frozen=True)
class Sender:
    label: str
    settings: CallerSettings


# Ways of sending the caller's audio, compared in every run: the default (10 ms frames
# straight to WebRTC); a short queue, released on the source's 10 ms tick; and what a
# caller gets without choosing, 20 ms frames into AudioSource's default queue.
OTHER_CALLERS = {
    "10 ms frames, no queue": CallerSettings(10, 0),
    "10 ms frames, 10 ms queue": CallerSettings(10, 10),
    "20 ms frames, AudioSource's default 1000 ms queue": CallerSettings(20, 1000),
}


def senders(caller: CallerSettings) -> list[Sender]:
    """This run's caller, and the other ways of sending to compare it with."""
    queue = f"queue {caller.queue_ms} ms" if caller.queue_ms else "no queue"
    out = [Sender(f"caller: {caller.frame_ms} ms frames, {queue}", caller)]
    out += [Sender(label, other) for label, other in OTHER_CALLERS.items() if other != caller]
    return out


@dataclass
class Transport:
    """One-way hops through livekit-server alone, no agent: from each sender to each
    listener; first voiced sample sent -> first voiced frame heard."""

    hops: dict[tuple[Sender, Listener], list[float]] = field(default_factory=dict)
    jitter_buffers: list[tuple[float, float]] = field(default_factory=list)


def sdk_token(identity: str, room: str) -> str:
    grants = api.VideoGrants(room_join=True, room=room)
    return api.AccessToken(API_KEY, API_SECRET).with_identity(identity).with_grants(grants).to_jwt()


async def voice_after(ear: AgentEar | None, wall: float, timeout: float = 5) -> float | None:
    """The first voiced frame `ear` heard after `wall`, or None (nothing heard in time, or
    no track from that sender reached this listener)."""
    if ear is None:
        return None
    try:
        return await ear.wait_for_voice_after(wall, timeout)
    except TimeoutError:
        return None


async def transport_hops(
    livekit_url: str, kinds: list[Sender], ways: list[Listener], count: int,
    transport: Transport, room: str,
) -> None:  # fmt: skip
    talkers = {f"{room}-sender-{i}": (kind, SdkParticipant(kind.settings))
               for i, kind in enumerate(kinds)}  # fmt: skip
    ears = {
        way: SdkParticipant(None, listen_rate=way.sample_rate, listen_frame_ms=way.frame_ms)
        for way in ways
    }
    try:
        for index, listener in enumerate(ears.values()):
            await listener.connect(livekit_url, sdk_token(f"{room}-listener-{index}", room))
        for identity, (_, talker) in talkers.items():
            await talker.connect(livekit_url, sdk_token(identity, room))
        await asyncio.sleep(1.0)  # every listener subscribed, the codec settled
        for _ in range(count):
            for identity, (kind, talker) in talkers.items():  # one at a time
                spoken = talker.say(CLICK_LINE)
                await spoken.done.wait()
                assert spoken.started_wall is not None
                for way, listener in ears.items():
                    heard = await voice_after(listener.ears.get(identity), spoken.started_wall)
                    if heard is not None:
                        hop = heard - spoken.started_wall
                        transport.hops.setdefault((kind, way), []).append(hop)
                await asyncio.sleep(0.4)
        if (jitter := await ears[ways[0]].jitter_buffer_ms()) is not None:
            transport.jitter_buffers.append(jitter)
    finally:
        for member in [*ears.values(), *(talker for _, talker in talkers.values())]:
            await member.leave()


# -- the run ----------------------------------------------------------------------------


def row(name: str, result: Result) -> str:
    lat = result.latencies
    over = [x - result.ideal_s for x in lat]
    missed = f" ({result.missed} missed)" if result.missed else ""
    return (
        f"| {name} | {len(lat)}{missed} | {ms(result.ideal_s)} ms "
        f"| {ms(percentile(lat, 50))} ms | {ms(percentile(lat, 95))} ms "
        f"| {ms(percentile(over, 50))} ms | {ms(percentile(over, 95))} ms |"
    )


def hop_row(inproc: Result, livekit: Result) -> str:
    def at(q: float) -> str:
        return ms(percentile(livekit.latencies, q) - percentile(inproc.latencies, q))

    return f"| WebRTC hop (b - a) | | | {at(50)} ms | {at(95)} ms | {at(50)} ms | {at(95)} ms |"


def stage_row(name: str, stages: dict[str, list[float]]) -> str:
    cells = [f"{ms(statistics.median(v))} ms" if v else "-" for v in stages.values()]
    return f"| {name} | {len(stages['first_frame'])} | " + " | ".join(cells) + " |"


def step_ms(stages: dict[str, list[float]], start: str | None, end: str) -> str:
    """Median over turns of one step (from the caller's end of speech when `start` is
    None), in ms."""
    if start is None:
        steps = stages[end]
    else:
        steps = [b - a for a, b in zip(stages[start], stages[end], strict=True)]
    return ms(statistics.median(steps)) if steps else "-"


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{ms(percentile(values, 50))} ms ({ms(percentile(values, 95))} ms)"


def mean_jitter(samples: list[tuple[float, float]]) -> str:
    if not samples:
        return "-"
    delay = statistics.mean(d for d, _ in samples)
    target = statistics.mean(t for _, t in samples)
    return f"{delay:.0f} ms (target {target:.0f} ms)"


def reply_lead_in_s(delays: Delays) -> float:
    """Silence at the head of the reply's TTS audio: a real-time playout plays it before
    the first voiced sample; the in-process figure counts the first frame, whatever it
    holds."""
    wpm = int(delays.fake_config()["speech"]["words_per_minute"])
    samples = speech(REPLY, "en", SAMPLE_RATE, wpm).astype(np.int32)
    loud = np.flatnonzero(np.abs(samples) > VOICED)
    return float(loud[0]) / SAMPLE_RATE if loud.size else 0.0


@dataclass
class Measured:
    inproc: Result
    livekit: LiveKitRun
    transport: Transport
    served: dict[str, list[float]]
    timeline: dict[str, list[float]]


async def measure(
    base_url: str,
    livekit_url: str,
    fakes_port: int,
    args: argparse.Namespace,
    delays: Delays,
    on_progress: Callable[[str], None],
) -> Measured:
    turns = default_conversation().turns
    vad_silence_s = float(shared_vad()._opts.min_silence_duration)  # type: ignore[attr-defined]
    ideal = ideal_latency(turns, delays, vad_silence_s)
    inproc = Result("in-process", turns, ideal)
    livekit = LiveKitRun(Result("through LiveKit", turns, ideal))
    transport = Transport()
    caller = CallerSettings(frame_ms=args.caller_frame_ms, queue_ms=args.caller_queue_ms)
    fakes = RemoteFakes(port=fakes_port)
    per_round = max(1, args.turns // args.rounds)
    clicks = max(1, args.clicks // args.rounds)
    for round_index in range(args.rounds):
        offset = round_index * per_round
        await run_turns(fakes, inproc, per_round, offset)
        on_progress(f"round {round_index + 1}: in-process done")
        await livekit_turns(base_url, caller, livekit, per_round, offset)
        on_progress(f"round {round_index + 1}: through LiveKit done")
        await transport_hops(
            livekit_url, senders(caller), listeners(turns), clicks, transport,
            f"bench-transport-{round_index}",
        )  # fmt: skip
        on_progress(f"round {round_index + 1}: LiveKit alone done")
    return Measured(inproc, livekit, transport, await fakes.served_delays(), await fakes.timeline())


def report(
    args: argparse.Namespace, delays: Delays, m: Measured, wall_s: float, load_at_start: float
) -> None:
    turns = default_conversation().turns
    inproc, livekit = m.inproc, m.livekit.result
    print(
        f"vendor delays configured: STT final {ms(delays.stt_final_s)} ms after speech end, "
        f"LLM first token {ms(delays.llm_first_token_s)} ms "
        f"(+{ms(delays.first_sentence_s)} ms to stream the first sentence), "
        f"TTS first byte {ms(delays.tts_first_byte_s)} ms"
    )
    print(
        "vendor delays served (median): "
        + ", ".join(f"{k} {ms(statistics.median(v))} ms" for k, v in m.served.items() if v)
    )
    print(
        f"caller: {args.caller_frame_ms} ms frames at {CALLER_SAMPLE_RATE // 1000} kHz, "
        f"AudioSource queue {args.caller_queue_ms} ms (0: none), receives 48 kHz; agent "
        f"(agent/conversation.yaml): receives {turns.input_frame_ms} ms frames at "
        f"{turns.input_sample_rate // 1000} kHz; {args.turns} turns per path in {args.rounds} "
        f"interleaved rounds, {wall_s:.0f} s"
    )
    print(
        f"machine: {os.cpu_count()} cores, load average {load_at_start:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end; calls no agent answered, called again: "
        f"{m.livekit.unanswered} (the worker declines jobs while the machine's CPU is saturated)"
    )
    print()
    print("| path | turns | ideal | latency p50 | latency p95 | overhead p50 | overhead p95 |")
    print("|" + "---|" * 7)
    print(row("(a) in-process", inproc))
    print(row("(b) through LiveKit", livekit))
    print(hop_row(inproc, livekit))
    print()
    print("Where the time goes: median moment of each step after the caller's speech ended")
    print()
    print("| path | turns | " + " | ".join(label for _, label in STAGES) + " |")
    print("|" + "---|" * (len(STAGES) + 2))
    stages = {r.name: stage_times(r.walls, m.timeline) for r in (inproc, livekit)}
    for name, per_stage in stages.items():
        print(stage_row(name, per_stage))
    print()
    print("| path | way in: end of speech -> Deepgram fake hears it "
          "| way out: TTS first byte -> first agent audio at the caller |")  # fmt: skip
    print("|---|---|---|")
    for name, per_stage in stages.items():
        print(
            f"| {name} | {step_ms(per_stage, None, 'stt_speech_end')} ms "
            f"| {step_ms(per_stage, 'tts_first_byte', 'first_frame')} ms |"
        )
    print()
    ways = list(dict.fromkeys(way for _, way in m.transport.hops))
    kinds = list(dict.fromkeys(kind for kind, _ in m.transport.hops))
    clicks = max((len(v) for v in m.transport.hops.values()), default=0)
    print(
        f"LiveKit alone, one way, no agent: first voiced sample sent -> first voiced frame "
        f"heard, p50 (p95) of {clicks} clicks, by how the audio is sent and received"
    )
    print()
    print("| sender | " + " | ".join(f"to the {w.label}" for w in ways) + " |")
    print("|" + "---|" * (len(ways) + 1))
    for kind in kinds:
        cells = [spread(m.transport.hops.get((kind, way), [])) for way in ways]
        print(f"| {kind.label} | " + " | ".join(cells) + " |")
    print()
    print(
        f"jitter buffer (WebRTC receive stats, mean per sample played): the caller in the "
        f"calls {mean_jitter(m.livekit.jitter_buffers)}; LiveKit alone "
        f"{mean_jitter(m.transport.jitter_buffers)}"
    )
    print(
        f"the reply's TTS audio starts with {ms(reply_lead_in_s(delays))} ms of silence "
        f"(played out before its first voiced sample reaches the caller)"
    )
    over_p95 = percentile(livekit.latencies, 95) - livekit.ideal_s
    print()
    print(f"livekit overhead p95: {ms(over_p95)} ms")
    met = "met" if over_p95 <= TARGET_OVERHEAD_P95_S else "missed"
    print(f"target (<= {ms(TARGET_OVERHEAD_P95_S)} ms): {met}")


def relaxed_policies(directory: Path) -> Path:
    """The shipped policies, but one visitor (this caller) may make every call of the run
    back to back: the bench times calls, not admission."""
    return write_policies(
        directory,
        limits=roomy_caps({"visitor": {"concurrent_sessions": 5, "sessions_per_hour": 1000,
                                       "sessions_per_day": 1000, "minutes_per_day": 1000}}),
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=16, help="turns per path")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds (calls)")
    parser.add_argument("--clicks", type=int, default=16, help="LiveKit-alone hops timed")
    parser.add_argument("--caller-frame-ms", type=int, default=10)
    parser.add_argument(
        "--caller-queue-ms", type=int, default=0, help="0: each frame straight to WebRTC"
    )
    args = parser.parse_args()
    if args.caller_queue_ms % 10 or args.caller_queue_ms < 0:
        parser.error("--caller-queue-ms must be a multiple of 10 (livekit.rtc)")
    if args.caller_queue_ms == 0 and args.caller_frame_ms != 10:
        parser.error("without a queue, WebRTC takes 10 ms frames only (--caller-frame-ms 10)")
    ensure_offline()
    logging.basicConfig(level=logging.ERROR)

    # bench/voice_latency.py's default vendor delays
    delays = Delays(stt_final_s=0.15, llm_first_token_s=0.4, llm_tokens_per_s=60,
                    tts_first_byte_s=0.2)  # fmt: skip
    started, load_at_start = time.monotonic(), os.getloadavg()[0]
    redis = RedisServer().start()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="ocf-bench-policies-") as policies,
            running_stack(
                redis.url,
                fakes_config=delays.fake_config(),
                env={"POLICIES_DIR": str(relaxed_policies(Path(policies)))},
                name="call-latency",
            ) as stack,
        ):
            assert stack.fakes is not None

            def progress(text: str) -> None:
                print(f"{time.monotonic() - started:4.0f} s {text}", file=sys.stderr, flush=True)

            progress("stack up")
            measured = asyncio.run(
                measure(stack.base_url, stack.livekit_url, stack.fakes.port, args, delays, progress)
            )
    finally:
        redis.stop()
    report(args, delays, measured, time.monotonic() - started, load_at_start)


if __name__ == "__main__":
    main()
