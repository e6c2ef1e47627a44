"""Agent worker footprint and speed.

Prints: the prewarm time (Silero VAD + data files), the resident memory of one idle job
process (taken from the worker's own process pool, as `python -m agent start` keeps it
warm) and of one job process in a live session (audio flowing through the VAD, instant
providers), and the time from session start to the first greeting audio frame with
instant providers (a TTS that answers at once, so what is measured is our code and the
framework). Baselines measured in the same run: a bare process with livekit-agents and
the plugins imported, and `session.say()` of the same greeting on a session already
running.

    .venv/bin/python -m bench.worker_footprint [--rounds 7] [--live-seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]  # the repo root: children run `-m bench.<name>` there

TARGET_IDLE_MB = 150.0
TARGET_FIRST_FRAME_MS = 150.0
PERSONA = "agence-immo-fr"


def memory_mb(pid: int | None = None) -> dict[str, float]:
    """RSS, PSS and USS (private pages) of a process, from /proc, in MB."""
    base = f"/proc/{pid or os.getpid()}"
    out: dict[str, float] = {}
    with open(f"{base}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                out["rss"] = int(line.split()[1]) / 1024
    private = 0
    with open(f"{base}/smaps_rollup") as rollup:
        for line in rollup:
            name, _, rest = line.partition(":")
            if name == "Pss":
                out["pss"] = int(rest.split()[0]) / 1024
            elif name in ("Private_Clean", "Private_Dirty"):
                private += int(rest.split()[0])
    out["uss"] = private / 1024
    return out


# --- instant providers -------------------------------------------------------------------


def instant_providers() -> tuple[Any, Any]:
    import numpy as np
    from livekit.agents import APIConnectOptions, stt, tts, utils
    from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS

    rate = 24000

    class InstantTTS(tts.TTS[Any]):
        """Answers at once with ~60 ms of tone per word (raw PCM, as the worker asks for)."""

        def __init__(self) -> None:
            super().__init__(capabilities=tts.TTSCapabilities(streaming=False),
                             sample_rate=rate, num_channels=1)  # fmt: skip

        def synthesize(
            self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
        ) -> tts.ChunkedStream:
            return _Chunked(tts=self, input_text=text, conn_options=conn_options)

    class _Chunked(tts.ChunkedStream):
        async def _run(self, output_emitter: tts.AudioEmitter) -> None:
            output_emitter.initialize(request_id=utils.shortuuid(), sample_rate=rate,
                                      num_channels=1, mime_type="audio/pcm")  # fmt: skip
            samples = int(rate * 0.06 * max(1, len(self.input_text.split())))
            t = np.arange(samples) / rate
            tone = (3000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)
            output_emitter.push(tone.tobytes())
            output_emitter.flush()

    class InstantSTT(stt.STT[Any]):
        """Takes the audio as a streaming STT does and hears nothing (the caller is quiet)."""

        def __init__(self) -> None:
            super().__init__(capabilities=stt.STTCapabilities(streaming=True,
                                                              interim_results=True))  # fmt: skip

        async def _recognize_impl(self, buffer: Any, *, language: Any = None,
                                  conn_options: Any = None) -> stt.SpeechEvent:  # fmt: skip
            return stt.SpeechEvent(type=stt.SpeechEventType.FINAL_TRANSCRIPT, alternatives=[])

        def stream(
            self,
            *,
            language: Any = None,
            conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        ) -> Any:
            return _Listening(stt=self, conn_options=conn_options, sample_rate=16000)

    class _Listening(stt.RecognizeStream):
        async def _run(self) -> None:
            async for _ in self._input_ch:
                pass

    return InstantTTS(), InstantSTT()


# --- children ----------------------------------------------------------------------------


def child_baseline() -> None:
    """A process with what a job process imports, and nothing loaded or running."""
    import livekit.agents  # noqa: F401

    framework = memory_mb()
    from livekit.plugins import deepgram, openai, silero  # noqa: F401

    print(json.dumps({"framework": framework, "memory": memory_mb()}))


async def child_live(rounds: int, live_seconds: float) -> None:
    from livekit.agents import JobExecutorType, JobProcess

    from agent.assembly import assemble_call
    from agent.conversation import default_conversation
    from agent.worker import prewarm
    from tests.agent.support import RELAXED, UNSCRIPTED, ScriptedLLM, spec_for
    from tests.fakes.audio_io import CallerMicrophone, CallerSpeaker

    logging.basicConfig(level=logging.WARNING)
    proc = JobProcess(executor_type=JobExecutorType.PROCESS, user_arguments=None, http_proxy=None)
    started = time.perf_counter()
    prewarm(proc)
    prewarm_s = time.perf_counter() - started
    idle = memory_mb()
    conversation = default_conversation()
    first_frames: list[float] = []
    say_frames: list[float] = []
    live: dict[str, float] = {}
    for index in range(rounds):
        tts, stt = instant_providers()
        parts = assemble_call(spec_for(PERSONA), conversation, stt=stt, llm=ScriptedLLM(UNSCRIPTED),
                              tts=tts, vad_model=proc.userdata["vad"], timings=RELAXED)  # fmt: skip
        microphone, speaker = CallerMicrophone(), CallerSpeaker()
        parts.session.input.audio = microphone
        parts.session.output.audio = speaker
        t0 = time.monotonic()
        parts.call.begin()
        await parts.session.start(parts.agent, record=False)
        first = await _first_frame_after(speaker, t0)
        first_frames.append(first - t0)
        # Baseline: the same words said on a session already running (no start-up).
        await speaker.wait_until_quiet(10)
        t1 = time.monotonic()
        parts.session.say(parts.agent.persona.greeting)
        say_frames.append(await _first_frame_after(speaker, t1) - t1)
        if index == rounds - 1:
            await asyncio.sleep(live_seconds)  # a live line: the VAD and STT take audio
            live = memory_mb()
        microphone.close()
        await parts.session.aclose()
    print(json.dumps({"prewarm_s": prewarm_s, "idle": idle, "live": live,
                      "first_frame_s": first_frames, "say_first_frame_s": say_frames}))  # fmt: skip


async def _first_frame_after(speaker: Any, wall: float, timeout: float = 10) -> float:
    deadline = time.monotonic() + timeout
    while (first := speaker.first_frame_after(wall)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError("no agent audio frame")
        await asyncio.sleep(0.001)
    return float(first)


# --- the worker's own pool ---------------------------------------------------------------


async def pool_idle_process() -> dict[str, Any]:
    """Start the real AgentServer (unregistered: no LiveKit needed) with one idle process."""
    from agent.worker import build_server
    from server.settings import Settings

    prewarms: list[float] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "job process prewarmed":
                prewarms.append(float(getattr(record, "prewarm_s", "nan")))

    logging.getLogger().addHandler(Catch())
    logging.getLogger().setLevel(logging.INFO)
    settings = Settings(openai_api_key="bench", deepgram_api_key="bench", agent_health_port=0,
                        agent_num_idle_processes=1)  # fmt: skip
    server = build_server(settings)
    started = time.perf_counter()
    task = asyncio.create_task(server.run(devmode=False, unregistered=True))
    while True:
        pool = getattr(server, "_proc_pool", None)
        if pool is not None and pool._warmed_proc_queue.qsize() >= 1:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    ready_s = time.perf_counter() - started
    await asyncio.sleep(1.0)  # let the new process settle
    pid = server._proc_pool.processes[0].pid  # type: ignore[attr-defined]
    assert pid is not None
    memory = memory_mb(pid)
    await server.aclose()
    await asyncio.gather(task, return_exceptions=True)
    return {"ready_s": ready_s, "memory": memory, "prewarm_s": prewarms}


def run_child(*args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "bench.worker_footprint", *args],
                         capture_output=True, text=True, cwd=ROOT, check=False,
                         timeout=300)  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"bench child {args} failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.1f} ms (median of {len(values)}, " \
           f"first {values[0] * 1000:.1f}, max {max(values) * 1000:.1f})"  # fmt: skip


def verdict(value: float, target: float) -> str:
    return "ok" if value <= target else "OVER TARGET"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--live-seconds", type=float, default=5.0)
    parser.add_argument("--child", choices=["baseline", "live"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "baseline":
        child_baseline()
        return 0
    if args.child == "live":
        asyncio.run(child_live(args.rounds, args.live_seconds))
        return 0

    baseline = run_child("--child", "baseline")
    pool = asyncio.run(pool_idle_process())
    live = run_child("--child", "live", "--rounds", str(args.rounds),
                     "--live-seconds", str(args.live_seconds))  # fmt: skip

    b, m, i, lv = baseline["memory"], pool["memory"], live["idle"], live["live"]
    first = statistics.median(live["first_frame_s"]) * 1000
    say = statistics.median(live["say_first_frame_s"]) * 1000
    prewarm = pool["prewarm_s"][0] if pool["prewarm_s"] else live["prewarm_s"]
    rows = [
        ("prewarm (Silero VAD + data files)",
         f"{prewarm * 1000:.0f} ms (process spawned and warm in {pool['ready_s'] * 1000:.0f} ms)"),
        ("baseline: bare process with the plugins",
         f"RSS {b['rss']:.1f} MB (livekit-agents alone: {baseline['framework']['rss']:.1f} MB)"),
        ("idle job process (the worker's pool)",
         f"RSS {m['rss']:.1f} MB (PSS {m['pss']:.1f}, private {m['uss']:.1f}); "
         f"target <= {TARGET_IDLE_MB:.0f} MB RSS: {verdict(m['rss'], TARGET_IDLE_MB)}; "
         f"{m['rss'] / b['rss']:.2f}x baseline"),
        ("idle job process (standalone, prewarmed)", f"RSS {i['rss']:.1f} MB"),
        (f"same, in a live session ({args.live_seconds:.0f} s of audio)",
         f"RSS {lv['rss']:.1f} MB (PSS {lv['pss']:.1f}, private {lv['uss']:.1f}); "
         f"+{lv['rss'] - i['rss']:.1f} MB for the call"),
        ("session start -> first greeting frame",
         f"{ms(live['first_frame_s'])}; target <= {TARGET_FIRST_FRAME_MS:.0f} ms: "
         f"{verdict(first, TARGET_FIRST_FRAME_MS)}"),
        ("baseline: say() on a running session",
         f"{ms(live['say_first_frame_s'])}; start-up adds {first - say:.1f} ms "
         f"({first / say:.2f}x)"),
    ]  # fmt: skip
    print("agent worker (python -m agent start), instant providers, one job process each:")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
