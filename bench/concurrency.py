"""Concurrent spoken calls on this machine: CPU and memory per call, latency as load grows.

Each call runs in its own process, as the worker runs each job in its own job process:
the process loads the Silero VAD (the worker's prewarm), then runs one call assembled by
the worker's code with the real Deepgram/OpenAI plugins. What differs from production is
only the transport: the caller's audio enters through `session.input.audio` instead of a
LiveKit room (no WebRTC/Opus decoding, which the LiveKit SDK does in native code outside
the agent's event loop), and the vendors are the local fakes, in a process of their own
whose CPU is not counted.

Steps: first one call that only listens (VAD and Deepgram stream running, the caller
silent) to price an idle line, under the default settings and the input framing / VAD
block alternatives side by side; then N = 1, 2, 4, ... simultaneous talking calls, each
saying a few lines with random pauses, until the p95 overhead (measured latency minus the
ideal of bench/voice_latency.py) reaches twice the single-call figure, or --max-calls.

    .venv/bin/python -m bench.concurrency [--turns 5] [--sizes 2,4,8,...] [--max-calls 48]
        [--listen-seconds 15] [--listen-rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.voice_latency import (
    CALLER_LINES,
    CONFIGS,
    PERSONA,
    Delays,
    ideal_latency,
    ms,
    percentile,
    timed_turn,
)

ROOT = Path(__file__).resolve().parents[1]  # the repo root: children run `-m bench.<name>` there

# Settings whose listening cost is compared (changes to conversation.yaml's `turns`):
# the input framing and the VAD's blocks are what a silent line spends its CPU on.
LISTEN_CONFIGS = {
    "default": CONFIGS["default"],
    "vad-per-frame": CONFIGS["vad-per-frame"],
    "input-50ms": CONFIGS["input-50ms"],
    "input-50ms-vad-per-frame": {"input_frame_ms": 50, "vad_block_ms": 0},
}

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def pss_mb(pid: int) -> float:
    """Proportional set size: the process's own memory plus its share of shared pages."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- one call per process ------------------------------------------------------------------


async def child_main(
    port: int, mode: str, turns: int, listen_s: float, seed: int, config: str
) -> None:
    from agent.conversation import default_conversation
    from tests.fakes.audio_io import CallerMicrophone
    from tests.fakes.server import RemoteFakes
    from tests.voice.harness import shared_vad, start_voice_call

    logging.basicConfig(level=logging.ERROR)
    settings = default_conversation().turns.model_copy(update=LISTEN_CONFIGS[config])
    shared_vad(settings.vad_block_ms)  # the job process's prewarm
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # "go"
    if mode == "microphone":
        # the stand-in for RoomIO's input alone, to know its share of a listening call
        mic = CallerMicrophone(
            frame_ms=settings.input_frame_ms, sample_rate=settings.input_sample_rate
        )
        print("listening", flush=True)
        until = time.monotonic() + listen_s
        async for _frame in mic:
            if time.monotonic() >= until:
                break
        print("done", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        return
    rng = random.Random(seed)
    await asyncio.sleep(rng.uniform(0, 2.0))  # calls do not start in lockstep
    # the worker's settings, input frames included (conversation.yaml turns)
    call = await start_voice_call(RemoteFakes(port), PERSONA, turns=settings)
    latencies: list[float] = []
    try:
        await call.speaker.wait_for_segment_after(call.started_wall, 15)
        await call.speaker.wait_until_quiet(30)
        if mode == "listen":
            print("listening", flush=True)
            await asyncio.sleep(listen_s)
            print("done", flush=True)
        else:
            for i in range(turns):
                turn = await timed_turn(call, CALLER_LINES[(seed + i) % len(CALLER_LINES)], 15)
                if turn is None:
                    continue
                latencies.append(turn[1] - turn[0])
                await call.speaker.wait_until_quiet(30)
                await asyncio.sleep(rng.uniform(0.4, 1.2))
    finally:
        await call.close()
    print(json.dumps({"latencies": latencies, "expected_turns": turns}), flush=True)
    # stay until the parent has read this process's CPU time; it then ends us
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


# -- the parent: spawns calls, samples their CPU and memory --------------------------------


@dataclass
class Child:
    proc: asyncio.subprocess.Process
    lines: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    reader: asyncio.Task[None] | None = None
    peak_pss_mb: float = 0.0
    peak_rss_mb: float = 0.0

    def sample_memory(self) -> None:
        try:
            self.peak_pss_mb = max(self.peak_pss_mb, pss_mb(self.pid))
            self.peak_rss_mb = max(self.peak_rss_mb, rss_mb(self.pid))
        except (FileNotFoundError, ProcessLookupError):
            pass  # already gone

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def pump(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            await self.lines.put(line.decode().strip())

    async def expect(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = await asyncio.wait_for(self.lines.get(), max(0.1, deadline - time.monotonic()))
            if line.startswith(prefix):
                return line


async def spawn(
    port: int, mode: str, turns: int, listen_s: float, seed: int, config: str = "default"
) -> Child:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.concurrency", "--child", "--port", str(port), "--mode", mode,
        "--turns", str(turns), "--listen-seconds", str(listen_s), "--seed", str(seed),
        "--config", config,
        cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    child = Child(proc)
    child.reader = asyncio.create_task(child.pump())
    return child


async def go(children: list[Child]) -> None:
    for child in children:
        assert child.proc.stdin is not None
        child.proc.stdin.write(b"go\n")
        await child.proc.stdin.drain()


async def finish(children: list[Child]) -> None:
    for child in children:
        if child.proc.returncode is None:
            child.proc.terminate()
        await child.proc.wait()


@dataclass
class Step:
    calls: int
    latencies: list[float]
    missed: int
    cpu_per_call: float  # fraction of one core
    pss_mb: float
    rss_mb: float
    wall_s: float


async def listening_step(port: int, listen_s: float, mode: str, config: str) -> tuple[float, float]:
    (child,) = [await spawn(port, mode, 0, listen_s, 0, config)]
    try:
        await child.expect("ready", 120)
        await go([child])
        await child.expect("listening", 60)
        cpu0, t0 = cpu_seconds(child.pid), time.monotonic()
        await child.expect("done", listen_s + 30)
        cpu1, t1 = cpu_seconds(child.pid), time.monotonic()
        return (cpu1 - cpu0) / (t1 - t0), pss_mb(child.pid)
    finally:
        await finish([child])


async def talking_step(port: int, calls: int, turns: int) -> Step:
    children = [await spawn(port, "talk", turns, 0, seed) for seed in range(calls)]
    try:
        for child in children:
            await child.expect("ready", 300)
        cpu0 = sum(cpu_seconds(c.pid) for c in children)
        t0 = time.monotonic()
        await go(children)
        results: list[dict[str, object]] = []

        async def collect(child: Child) -> None:
            line = await child.expect("{", 60 + turns * 30)
            results.append(json.loads(line))

        async def sample() -> None:
            while True:  # each call's peak memory while it runs
                for child in children:
                    child.sample_memory()
                await asyncio.sleep(1.0)

        sampler = asyncio.create_task(sample())
        await asyncio.gather(*(collect(c) for c in children))
        sampler.cancel()
        wall = time.monotonic() - t0
        cpu = sum(cpu_seconds(c.pid) for c in children) - cpu0
    finally:
        await finish(children)
    latencies = [x for r in results for x in r["latencies"]]  # type: ignore[attr-defined]
    expected = sum(int(r["expected_turns"]) for r in results)  # type: ignore[call-overload]
    return Step(
        calls=calls,
        latencies=latencies,
        missed=expected - len(latencies),
        cpu_per_call=cpu / wall / calls,
        pss_mb=statistics.mean(c.peak_pss_mb for c in children),
        rss_mb=statistics.mean(c.peak_rss_mb for c in children),
        wall_s=wall,
    )


async def listening_table(port: int, listen_s: float, rounds: int) -> None:
    """A silent caller's line under each LISTEN_CONFIGS setting, interleaved in rounds;
    the microphone (RoomIO's stand-in) priced alone at the same framing."""
    from agent.conversation import default_conversation

    cpu: dict[str, list[float]] = {name: [] for name in LISTEN_CONFIGS}
    mic: dict[str, list[float]] = {name: [] for name in LISTEN_CONFIGS}
    pss: dict[str, list[float]] = {name: [] for name in LISTEN_CONFIGS}
    for _ in range(rounds):
        for name in LISTEN_CONFIGS:
            used, memory = await listening_step(port, listen_s, "listen", name)
            cpu[name].append(used)
            pss[name].append(memory)
            mic[name].append((await listening_step(port, listen_s, "microphone", name))[0])
    print(
        f"listening call (VAD + Deepgram stream running, caller silent for {listen_s:g} s, "
        f"mean of {rounds} interleaved rounds), % of one core:"
    )
    print()
    print("| configuration | input | VAD blocks | listening call | of which microphone "
          "| without the microphone | PSS |")  # fmt: skip
    print("|" + "---|" * 7)
    for name, update in LISTEN_CONFIGS.items():
        t = default_conversation().turns.model_copy(update=update)
        call, alone = statistics.mean(cpu[name]), statistics.mean(mic[name])
        print(
            f"| {name} | {t.input_frame_ms} ms @ {t.input_sample_rate // 1000} kHz "
            f"| {f'{t.vad_block_ms} ms' if t.vad_block_ms else 'per frame'} "
            f"| {call * 100:.1f} % | {alone * 100:.1f} % | {(call - alone) * 100:.1f} % "
            f"| {statistics.mean(pss[name]):.0f} MB |"
        )
    print()
    print(f"listening call, default settings: {statistics.mean(cpu['default']) * 100:.1f} %")
    print()


async def parent_main(args: argparse.Namespace) -> None:
    from agent.conversation import default_conversation
    from tests.fakes.server import spawn_vendor_fakes
    from tests.voice.harness import shared_vad

    delays = Delays(0.15, 0.4, 60, 0.2)
    vad_silence_s = float(shared_vad()._opts.min_silence_duration)  # type: ignore[attr-defined]
    ideal = ideal_latency(default_conversation().turns, delays, vad_silence_s)
    cores = os.cpu_count() or 1
    sizes = sorted({1, *(int(n) for n in args.sizes.split(",") if n.strip())})
    sizes = [n for n in sizes if n <= args.max_calls]
    steps: list[Step] = []
    async with spawn_vendor_fakes(delays.fake_config()) as fakes:
        await listening_table(fakes.port, args.listen_seconds, args.listen_rounds)
        print(f"ideal latency with the default settings: {ms(ideal)} ms; {cores} cores")
        print()
        print(
            "| calls | calls/core | turns | latency p50 | latency p95 | overhead p95 "
            "| CPU per call | peak PSS per call | peak RSS per call |"
        )
        print("|" + "---|" * 9)
        for size in sizes:
            # the single call is the baseline the others are held against: its p95 comes
            # from as many turns as the larger steps have, not from its own 5
            turns = args.turns if size > 1 else args.turns * args.baseline_factor
            step = await talking_step(fakes.port, size, turns)
            steps.append(step)
            over_p95 = percentile(step.latencies, 95) - ideal
            print(
                f"| {size} | {size / cores:.1f} | {len(step.latencies)}"
                f"{f' ({step.missed} missed)' if step.missed else ''} "
                f"| {ms(percentile(step.latencies, 50))} ms "
                f"| {ms(percentile(step.latencies, 95))} ms | {ms(over_p95)} ms "
                f"| {step.cpu_per_call * 100:.1f} % | {step.pss_mb:.0f} MB "
                f"| {step.rss_mb:.0f} MB |",
                flush=True,
            )
            baseline = percentile(steps[0].latencies, 95) - ideal
            if size > 1 and (over_p95 >= 2 * baseline or step.missed > len(step.latencies)):
                break
    baseline = percentile(steps[0].latencies, 95) - ideal
    held = [s.calls for s in steps if percentile(s.latencies, 95) - ideal < 2 * baseline]
    best = max(held) if held else 0
    print()
    print(
        f"p95 overhead alone: {ms(baseline)} ms; held under 2x up to {best} concurrent calls "
        f"= {best / cores:.1f} calls per core"
        + ("" if len(held) < len(steps) else f" (not reached by {steps[-1].calls} calls)")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=5, help="lines each caller says")
    parser.add_argument("--max-calls", type=int, default=48)
    parser.add_argument(
        "--baseline-factor",
        type=int,
        default=4,
        help="the single call says this many times --turns",
    )
    parser.add_argument(
        "--sizes", default="2,4,8,12,16,20,24,32,40,48", help="numbers of calls to try (1 first)"
    )
    parser.add_argument("--listen-seconds", type=float, default=15)
    parser.add_argument("--listen-rounds", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="talk", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--config", default="default", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(
            child_main(
                args.port, args.mode, args.turns, args.listen_seconds, args.seed, args.config
            )
        )
    else:
        asyncio.run(parent_main(args))


if __name__ == "__main__":
    main()
