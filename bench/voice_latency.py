"""Voice latency: from the end of the caller's speech to the agent's first audio frame.

A spoken call to a persona, assembled by the worker's own code with the real Deepgram and
OpenAI plugins, against the local vendor fakes running in their own process at
vendor-like delays (Deepgram final 150 ms after speech ends, LLM first token 400 ms,
TTS first byte 200 ms by default). The caller (espeak-ng speech, real time, in the
frames the worker's RoomIO delivers: turns.input_frame_ms) says a line, the agent
answers; for every turn the silence is measured from the last voiced sample of the
caller's line to the first agent frame reaching the output.

    overhead = measured - ideal

`ideal` is what a framework costing nothing would achieve with the same settings and
vendor delays: the turn can close once the VAD has heard its silence, the endpointing
delay has passed and Deepgram's final is in; the LLM starts at the final (preemptive
generation) or at the turn's close; its first sentence is streamed; then TTS's first byte
(TTS starts on that sentence with preemptive TTS, else once the turn has closed too).
Several turn settings are compared side by side in one run, interleaved in rounds so a
noisy machine hits them all alike.

    .venv/bin/python -m bench.voice_latency [--turns 10] [--rounds 2] [--configs default,...]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agent.conversation import TurnSettings, default_conversation
from tests.fakes.audio_io import Spoken
from tests.fakes.openai_chat import token_pieces
from tests.fakes.server import RemoteFakes, spawn_vendor_fakes
from tests.voice.harness import VoiceCall, shared_vad, start_voice_call

PERSONA = "realty-desk-en"
CALLER_LINES = [
    "Do you have a two bedroom flat for sale in the Chartrons?",
    "What time are you open on Saturday?",
    "I would like to visit it tomorrow morning if possible.",
    "Is there a garden with the house in Le Bouscat?",
]
REPLY = "Certainly, I can help you with that right away."

# Turn settings compared, as changes to agent/conversation.yaml's `turns`.
CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    # the caller's audio framing and rate as RoomIO delivers it (worker: 20 ms at 16 kHz);
    # Deepgram gets each frame as it comes, so 50 ms frames also mean 50 ms chunks
    "input-50ms": {"input_frame_ms": 50},
    "input-24khz": {"input_sample_rate": 24000},
    "vad-per-frame": {"vad_block_ms": 0},
    "no-preemptive-tts": {"preemptive_tts": False},
    "no-preemptive": {"preemptive_generation": False},
    "tts-mp3": {"tts_response_format": "mp3"},
    "endpointing-0.8": {"min_endpointing_delay_s": 0.8},
    "stt-turns": {"turn_detection": "stt"},
}


@dataclass
class Delays:
    stt_final_s: float
    llm_first_token_s: float
    llm_tokens_per_s: float
    tts_first_byte_s: float

    @property
    def first_sentence_s(self) -> float:
        # the reply is one sentence: TTS gets it once its last token has streamed
        return (len(token_pieces(REPLY)) - 1) / self.llm_tokens_per_s

    def fake_config(self) -> dict[str, Any]:
        return {
            "fallback": {"say": REPLY},
            "transcripts": CALLER_LINES,
            "cycle": True,
            "chat": {
                "time_to_first_token_s": self.llm_first_token_s,
                "tokens_per_second": self.llm_tokens_per_s,
            },
            "speech": {
                "time_to_first_byte_s": self.tts_first_byte_s,
                "language": "en",
                # vendors stream TTS faster than real time; the agent plays it in real time
                "realtime_factor": 4,
                "words_per_minute": 260,
            },
            "listen": {
                "final_delay_s": self.stt_final_s,
                "end_silence_s": min(0.1, self.stt_final_s),
            },
        }


def ideal_latency(turns: TurnSettings, delays: Delays, vad_silence_s: float) -> float:
    """Speech end -> first agent frame with zero framework cost (see the module doc)."""
    if turns.turn_detection == "vad":
        closes = max(vad_silence_s, turns.min_endpointing_delay_s, delays.stt_final_s)
    else:
        closes = max(delays.stt_final_s, turns.min_endpointing_delay_s)
    llm_starts = delays.stt_final_s if turns.preemptive_generation else closes
    sentence_ready = llm_starts + delays.llm_first_token_s + delays.first_sentence_s
    if turns.preemptive_generation and turns.preemptive_tts:
        # TTS starts on the first sentence; its audio plays once the turn is confirmed
        return max(closes, sentence_ready + delays.tts_first_byte_s)
    return max(closes, sentence_ready) + delays.tts_first_byte_s


@dataclass
class Result:
    name: str
    turns: TurnSettings
    ideal_s: float
    latencies: list[float] = field(default_factory=list)
    # speech end -> the VAD's end of speech, -> the user turn committed (where time goes)
    vad_ends: list[float] = field(default_factory=list)
    commits: list[float] = field(default_factory=list)
    missed: int = 0
    # per turn: (speech end, first agent frame, the agent's final transcript) walls, to
    # place the vendors' own timeline (RemoteFakes.timeline) between them afterwards
    walls: list[tuple[float, float, float | None]] = field(default_factory=list)


# Where a turn's time goes: each step's moment, from the end of the caller's speech.
STAGES = [
    ("stt_speech_end", "audio end at Deepgram"),
    ("stt_final_sent", "final sent"),
    ("agent_final", "final at agent"),
    ("llm_received", "LLM request"),
    ("llm_last_token", "LLM last token"),
    ("tts_received", "TTS request"),
    ("tts_first_byte", "TTS first byte"),
    ("first_frame", "first frame"),
]


def stage_times(
    walls: list[tuple[float, float, float | None]], timeline: dict[str, list[float]]
) -> dict[str, list[float]]:
    """Per stage, its offset from the speech end in each turn where every step was seen
    (the agent's final only where known: a caller through LiveKit cannot see it).
    The reply's TTS request is the first one after the speech end; the LLM request behind
    it is the last one before it (an earlier preemptive attempt may have been dropped)."""
    out: dict[str, list[float]] = {key: [] for key, _ in STAGES}

    def within(kind: str, low: float, high: float) -> list[float]:
        return sorted(t for t in timeline.get(kind, []) if low <= t <= high)

    for end, frame, agent_final in walls:
        # the fake may place the last voiced 10 ms slightly before the microphone's count
        heard = within("stt_speech_end", end - 0.3, frame)
        tts = within("tts_received", end, frame)
        if not heard or not tts:
            continue
        llm = within("llm_received", end - 0.3, tts[0])
        last_token = within("llm_last_token", end - 0.3, tts[0])
        first_byte = within("tts_first_byte", tts[0], frame)
        finals = within("stt_final_sent", heard[0], frame)
        if not (llm and last_token and first_byte and finals):
            continue
        moments = {
            "stt_speech_end": heard[0],
            "stt_final_sent": finals[0],
            "agent_final": agent_final,
            "llm_received": llm[-1],
            "llm_last_token": last_token[-1],
            "tts_received": tts[0],
            "tts_first_byte": first_byte[0],
            "first_frame": frame,
        }
        for key, wall in moments.items():
            if wall is not None:
                out[key].append(wall - end)
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


async def answered(
    spoken: Spoken, heard_after: Callable[[float], Awaitable[float]]
) -> tuple[float, float] | None:
    """Once the caller has said `spoken`: (the end of its speech, when the answer was heard
    after it) as time.monotonic() walls, or None when `heard_after` timed out."""
    await spoken.done.wait()
    assert spoken.speech_end_wall is not None
    try:
        heard = await heard_after(spoken.speech_end_wall)
    except TimeoutError:
        return None
    return spoken.speech_end_wall, heard


async def timed_turn(call: VoiceCall, line: str, timeout: float) -> tuple[float, float] | None:
    """The caller says `line`; (end of its speech, the agent's first frame after it) as
    time.monotonic() walls, or None when no answer came within `timeout`."""

    async def first_frame(wall: float) -> float:
        return (await call.speaker.wait_for_segment_after(wall, timeout)).first_frame_wall

    return await answered(call.say(line), first_frame)


async def run_turns(fakes: RemoteFakes, result: Result, count: int, offset: int) -> None:
    call = await start_voice_call(fakes, PERSONA, turns=result.turns)
    vad_ends: list[float] = []
    commits: list[float] = []
    finals: list[float] = []
    session = call.parts.session
    session.on(
        "user_input_transcribed",
        lambda ev: finals.append(time.monotonic()) if ev.is_final else None,
    )
    session.on(
        "user_state_changed",
        lambda ev: vad_ends.append(time.monotonic()) if ev.new_state == "listening" else None,
    )
    session.on(
        "conversation_item_added",
        lambda ev: (
            commits.append(time.monotonic()) if getattr(ev.item, "role", None) == "user" else None
        ),
    )

    def first_after(times: list[float], wall: float) -> float | None:
        return next((t - wall for t in times if t >= wall), None)

    try:
        await call.speaker.wait_for_segment_after(call.started_wall, 10)
        await call.speaker.wait_until_quiet(20)
        for i in range(count):
            turn = await timed_turn(call, CALLER_LINES[(offset + i) % len(CALLER_LINES)], 10)
            if turn is None:
                result.missed += 1
                continue
            speech_end, first_frame = turn
            result.latencies.append(first_frame - speech_end)
            final = next((t for t in finals if t >= speech_end), None)
            result.walls.append((speech_end, first_frame, final))
            vad_end = first_after(vad_ends, speech_end)
            commit = first_after(commits, speech_end)
            if vad_end is not None and commit is not None:
                result.vad_ends.append(vad_end)
                result.commits.append(commit)
            await call.speaker.wait_until_quiet(20)
            await asyncio.sleep(0.6)  # the caller takes a breath before the next line
    finally:
        await call.close()


def preemptive(turns: TurnSettings) -> str:
    if not turns.preemptive_generation:
        return "off"
    return "LLM + TTS" if turns.preemptive_tts else "LLM"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stt-final-ms", type=float, default=150)
    parser.add_argument("--llm-first-token-ms", type=float, default=400)
    parser.add_argument("--llm-tokens-per-s", type=float, default=60)
    parser.add_argument("--tts-first-byte-ms", type=float, default=200)
    parser.add_argument("--turns", type=int, default=10, help="turns per configuration")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    delays = Delays(
        stt_final_s=args.stt_final_ms / 1000,
        llm_first_token_s=args.llm_first_token_ms / 1000,
        llm_tokens_per_s=args.llm_tokens_per_s,
        tts_first_byte_s=args.tts_first_byte_ms / 1000,
    )
    base = default_conversation().turns
    vad_silence_s = float(shared_vad()._opts.min_silence_duration)  # type: ignore[attr-defined]
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown configs {unknown}; known: {', '.join(CONFIGS)}")
    results = {name: Result(name, base.model_copy(update=CONFIGS[name]), 0.0) for name in names}
    for result in results.values():
        result.ideal_s = ideal_latency(result.turns, delays, vad_silence_s)

    per_round = max(1, args.turns // args.rounds)
    started = time.monotonic()
    async with spawn_vendor_fakes(delays.fake_config()) as fakes:
        for round_index in range(args.rounds):
            for result in results.values():
                await run_turns(fakes, result, per_round, round_index * per_round)
        served = await fakes.served_delays()
        timeline = await fakes.timeline()

    print(
        f"vendor delays configured: STT final {ms(delays.stt_final_s)} ms after speech end, "
        f"LLM first token {ms(delays.llm_first_token_s)} ms "
        f"(+{ms(delays.first_sentence_s)} ms to stream the first sentence at "
        f"{delays.llm_tokens_per_s:g} tokens/s), TTS first byte {ms(delays.tts_first_byte_s)} ms"
    )
    print(
        "vendor delays served (median): "
        + ", ".join(f"{k} {ms(statistics.median(v))} ms" for k, v in served.items() if v)
    )
    print(
        f"VAD silence before end of speech: {ms(vad_silence_s)} ms; "
        f"{args.turns} turns per configuration in {args.rounds} interleaved rounds, "
        f"{time.monotonic() - started:.0f} s"
    )
    print()
    header = (
        "| configuration | input | VAD blocks | turn detection | min endpointing "
        "| preemptive | TTS format | turns "
        "| median | p95 | ideal | overhead median | overhead p95 | VAD end | turn closed |"
    )
    print(header)
    print("|" + "---|" * 15)
    for result in results.values():
        t = result.turns
        lat = result.latencies
        over = [x - result.ideal_s for x in lat]
        print(
            f"| {result.name} | {t.input_frame_ms} ms @ {t.input_sample_rate // 1000} kHz "
            f"| {f'{t.vad_block_ms} ms' if t.vad_block_ms else 'per frame'} "
            f"| {t.turn_detection} "
            f"| {ms(t.min_endpointing_delay_s)} ms "
            f"| {preemptive(t)} | {t.tts_response_format} "
            f"| {len(lat)}{f' ({result.missed} missed)' if result.missed else ''} "
            f"| {ms(statistics.median(lat))} ms | {ms(percentile(lat, 95))} ms "
            f"| {ms(result.ideal_s)} ms | {ms(statistics.median(over))} ms "
            f"| {ms(percentile(over, 95))} ms | {ms(statistics.median(result.vad_ends))} ms "
            f"| {ms(statistics.median(result.commits))} ms |"
        )
    print()
    print("Where the time goes: median moment of each step after the caller's speech ended")
    print()
    print("| configuration | turns | " + " | ".join(label for _, label in STAGES) + " |")
    print("|" + "---|" * (len(STAGES) + 2))
    for result in results.values():
        stages = stage_times(result.walls, timeline)
        seen = len(stages["first_frame"])
        cells = [f"{ms(statistics.median(v))} ms" if v else "-" for v in stages.values()]
        print(f"| {result.name} | {seen} | " + " | ".join(cells) + " |")
    print()
    if "default" in results and results["default"].latencies:
        default = results["default"]
        over = [x - default.ideal_s for x in default.latencies]
        print(f"overhead p95: {ms(percentile(over, 95))} ms")


if __name__ == "__main__":
    asyncio.run(main())
