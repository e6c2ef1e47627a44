"""Simultaneous calls through the real path: how many a worker core holds.

At each level N, N simulated visitors call at once, each as the demo page does: a token from
the token server over HTTP (`POST /api/token`, each from an address of its own through
X-Forwarded-For), a room joined through livekit-server with LiveKit's Python SDK, a
microphone publishing the caller's lines (espeak-ng speech, in real time, with pauses), and
the agent's audio received. Every reply is timed at the caller, from the last voiced sample
it sends to the first voiced agent frame it receives (bench/call_latency.py's caller).
The agent is `python -m agent start` with the real plugins against the vendor fakes in their
own process (tests/e2e/livekit_stack.py), at bench/voice_latency.py's default vendor delays.

Each level: the calls ramp up, every caller hears its greeting, then all talk for
`--window` seconds (the single call for `--baseline-window`, so its p95 rests on as many
turns as a loaded level's); what is measured is measured over that window. Then they hang
up, and the next level starts once the worker has closed every session (no slot held).

    overhead = reply latency - ideal   (ideal: bench/voice_latency.py's, default settings)

Calls per worker core: the largest N whose p95 overhead stays under twice the single
call's (level 1, same run), divided by the worker's cores. By default the worker (its main
process and every job process) is pinned to CPU 0 and everything else (callers,
livekit-server, token server, vendor fakes, Redis) to CPU 1, so the worker has exactly one
core and the callers' cost never lands on it; the others' CPU is measured and printed.
The machine is shared: /proc/stat's busy time of each CPU (everyone's processes) is
printed too.

What a call costs Redis is counted over the second level's calls, from their tokens to
their close, with MONITOR (bench/redis_count.py: requests by sending process, commands run
inside scripts, the sweeper's periodic passes apart), with the MEMORY USAGE of the closed
session records and of every key left.

The worker is full by call count (AGENT_MAX_CALLS), not by CPU: on a saturated shared
machine livekit-agents' CPU load would decline calls. Bounded: at most MAX_LEVEL calls at
once, no level starts past `--budget` seconds, and every wait has a timeout. Runs only
where nothing but 127.0.0.0/8 exists: outside scripts/offline it re-executes itself
through it.

    .venv/bin/python -m bench.load [--levels 1,2,4,6,8,10,12] [--window 30]
        [--baseline-window 100] [--callers-per-process 3] [--no-pin] [--budget 540]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.call_latency import (
    QUIET_S,
    AgentEar,
    CallerSettings,
    SdkParticipant,
    ensure_offline,
)
from bench.concurrency import cpu_seconds, pss_mb
from bench.redis_count import Count, Monitor, Owners, count
from bench.voice_latency import (
    CALLER_LINES,
    PERSONA,
    Delays,
    answered,
    ideal_latency,
    ms,
    percentile,
)
from tests.fakes.audio_io import Spoken

ROOT = Path(__file__).resolve().parents[1]  # the repo root: children run `-m bench.<name>` there

# bench/voice_latency.py's default vendor delays (and bench/call_latency.py's).
DELAYS = Delays(stt_final_s=0.15, llm_first_token_s=0.4, llm_tokens_per_s=60,
                tts_first_byte_s=0.2)  # fmt: skip
# LiveKit offers a job to a worker only while its load is under the server's target load
# (livekit-server `agents.target_load`, 0.7 by default); AGENT_MAX_CALLS is set so the
# largest level stays under it: the worker never refuses for load during the bench.
LIVEKIT_TARGET_LOAD = 0.7
# The agent joins within this time of the caller, or the call counts as refused
# ("no_agent"); generous: at a burst the worker starts a job process per call.
AGENT_JOIN_S = 45.0
# A reply must come within this after the caller's line, or the turn counts as missed.
REPLY_TIMEOUT_S = 10.0
# How fast callers arrive: a few per second, as a campaign's visitors would, not all in
# the same millisecond.
ARRIVALS_PER_S = 2.0
# The worker's CPU (pinned mode) and everyone else's.
WORKER_CPU, OTHERS_CPU = 0, 1
# A caller's address: TEST-NET-3, one per call of the run (so no visitor limit binds).
ADDRESS = "203.0.113.{}"
# The most calls one level may make (and the addresses a run may use: 254).
MAX_LEVEL = 64
# A CPU this busy over a window (all users) had no time to spare: whatever ran there waited.
SATURATED = 0.9


# -- a caller process: a few visitors -------------------------------------------------------


async def visitor(
    index: int, base_url: str, address: str, seed: int, go: asyncio.Event, stop: asyncio.Event
) -> dict[str, Any]:
    """One visitor's call; returns what it measured, or why it got no call."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        res = await http.post(
            "/api/token", json={"agent": PERSONA}, headers={"X-Forwarded-For": address}
        )
    if res.status_code != 201:
        try:
            reason = str(res.json().get("error", res.status_code))
        except ValueError:
            reason = str(res.status_code)
        return {"refused": reason}
    grant = res.json()
    caller = SdkParticipant(CallerSettings(frame_ms=10, queue_ms=0))
    try:
        try:
            await asyncio.wait_for(
                caller.connect(grant["server_url"], grant["participant_token"]), 30
            )
        except Exception:
            return {"refused": "join_failed"}
        deadline = time.monotonic() + AGENT_JOIN_S
        while not caller.room.remote_participants and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if not caller.room.remote_participants:
            return {"refused": "no_agent"}
        try:
            await caller.ear.wait_for_voice_after(0.0, 60)
            await caller.ear.wait_until_quiet(QUIET_S, 30)
        except TimeoutError:
            return {"refused": "no_greeting"}
        emit({"caller": index, "ready": True})
        await go.wait()
        rng = random.Random(seed)
        await asyncio.sleep(rng.uniform(0, 2.0))  # calls do not talk in lockstep
        latencies: list[float] = []
        missed = overlapped = 0
        turn = 0
        ear = caller.ear
        while not stop.is_set():
            spoken = caller.say(CALLER_LINES[(seed + turn) % len(CALLER_LINES)])
            turn += 1
            answer = await answered(
                spoken, lambda wall: ear.wait_for_voice_after(wall, REPLY_TIMEOUT_S)
            )
            if answer is None:
                missed += 1
            elif talked_over(ear, spoken):
                overlapped += 1
            else:
                latencies.append(answer[1] - answer[0])
            with contextlib.suppress(TimeoutError):
                await ear.wait_until_quiet(QUIET_S, 30)
            await asyncio.sleep(rng.uniform(0.4, 1.2))  # the caller thinks
        return {"latencies": latencies, "missed": missed, "overlapped": overlapped}
    finally:
        await caller.leave()


def talked_over(ear: AgentEar, spoken: Spoken) -> bool:
    """The agent's voice reached the caller while the caller was saying its line: the
    previous answer stalled for more than QUIET_S and went on. The first voice after the
    line is then that answer's rest, not a reply: no latency to take from it."""
    start, end = spoken.started_wall, spoken.speech_end_wall
    assert start is not None and end is not None
    return any(start <= t <= end for t in ear.voiced_walls)


def emit(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


async def caller_process(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.ERROR)
    go, stop = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    async def commands() -> None:
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            {"go": go, "stop": stop}[line.strip()].set()
        stop.set()  # the parent is gone: finish

    reader = asyncio.create_task(commands())

    async def one(slot: int) -> None:
        index = args.first + slot
        await asyncio.sleep(args.delay + slot * args.spacing)
        try:
            result = await visitor(
                index, args.base_url, ADDRESS.format(args.address + slot), index, go, stop
            )
        except Exception as exc:  # never lose a caller silently: report what it was
            result = {"refused": f"error:{type(exc).__name__}"}
        emit({"caller": index, **result})

    await asyncio.gather(*(one(slot) for slot in range(args.count)))
    emit({"left": True})
    reader.cancel()


# -- the parent: the stack, the levels, the measures -------------------------------------------


def pids_in_group(pgid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid:
            found.append(int(entry.name))
    return found


def cpu_busy() -> list[tuple[int, int]]:
    """Per CPU, (busy, total) jiffies since boot, from /proc/stat (every process's)."""
    out = []
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            numbers = [int(v) for v in values]
            idle = numbers[3] + numbers[4]  # idle + iowait
            out.append((sum(numbers) - idle, sum(numbers)))
    return out


@dataclass
class Tracked:
    """CPU seconds of a set of processes over a window, processes coming and going: each
    counts from the window's start, or from zero if born during it."""

    start: dict[int, float] = field(default_factory=dict)
    last: dict[int, float] = field(default_factory=dict)

    def begin(self, pids: list[int]) -> None:
        self.start = {pid: _cpu(pid) for pid in pids}
        self.last = dict(self.start)

    def sample(self, pids: list[int]) -> None:
        for pid in pids:
            value = _cpu(pid)
            if value >= 0:
                self.start.setdefault(pid, 0.0)
                self.last[pid] = value

    @property
    def seconds(self) -> float:
        return sum(self.last[pid] - self.start.get(pid, 0.0) for pid in self.last)


def _cpu(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except (FileNotFoundError, ProcessLookupError):
        return -1.0


def _pss(pid: int) -> float:
    try:
        return pss_mb(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0


@dataclass
class Level:
    size: int
    answered: int = 0
    latencies: list[float] = field(default_factory=list)
    # no reply within REPLY_TIMEOUT_S: counted as endless in the percentiles
    missed: int = 0
    # the agent still speaking over the caller's line: no reply to time
    overlapped: int = 0
    refusals: Counter[str] = field(default_factory=Counter)
    window_s: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # component -> CPU seconds
    cores_busy: list[float] = field(default_factory=list)  # per CPU, fraction busy
    worker_pss_mb: float = 0.0
    peak_pss_mb: dict[str, float] = field(default_factory=dict)  # the others, by name
    ramp_s: float = 0.0
    wind_down_s: float = 0.0

    def latency_p(self, q: float) -> float:
        return percentile([*self.latencies, *[math.inf] * self.missed], q)

    def overhead_p(self, q: float, ideal: float) -> float:
        return self.latency_p(q) - ideal


@dataclass
class Components:
    """The processes whose CPU is measured: the worker's group, and the rest."""

    worker_pgid: int
    others: dict[str, int]  # name -> pid
    callers: list[int] = field(default_factory=list)

    def owners(self) -> dict[str, list[int]]:
        """Who may hold a Redis connection: the worker's processes apart, the token server."""
        worker = pids_in_group(self.worker_pgid)
        return {
            "worker main": [self.worker_pgid],
            "job processes": [pid for pid in worker if pid != self.worker_pgid],
            "token server": [self.others["token-server"]],
        }

    def groups(self) -> dict[str, list[int]]:
        return {
            "worker": pids_in_group(self.worker_pgid),
            # its main process alone (registration, job dispatch, the job processes' logs)
            "worker main": [self.worker_pgid],
            **{name: [pid] for name, pid in self.others.items()},
            "callers": list(self.callers),
        }


def pin(pids: list[int], cpu: int) -> None:
    for pid in pids:
        try:
            if os.sched_getaffinity(pid) != {cpu}:
                os.sched_setaffinity(pid, {cpu})
        except (ProcessLookupError, PermissionError, OSError):
            pass


async def pump(proc: asyncio.subprocess.Process, into: asyncio.Queue[dict[str, Any]]) -> None:
    """A caller process's reports, into the level's one queue."""
    assert proc.stdout is not None
    while raw := await proc.stdout.readline():
        try:
            await into.put(json.loads(raw))
        except ValueError:
            continue  # a library's stray print


async def send(proc: asyncio.subprocess.Process, command: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(f"{command}\n".encode())
    await proc.stdin.drain()


async def run_level(
    size: int, window_s: float, base_url: str, parts: Components, args: argparse.Namespace,
    address_base: int, owners: Owners | None = None,
) -> Level:  # fmt: skip
    level = Level(size)
    per = max(1, args.callers_per_process)
    processes = len(range(0, size, per))
    children: list[asyncio.subprocess.Process] = []
    reports: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    pumps: list[asyncio.Task[None]] = []
    started = time.monotonic()
    for number, first in enumerate(range(0, size, per)):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.load", "--child", "--base-url", base_url,
            "--first", str(first), "--count", str(min(per, size - first)),
            "--address", str(address_base + first),
            # arrivals interleaved across processes: ARRIVALS_PER_S over the whole level
            "--spacing", str(processes / ARRIVALS_PER_S),
            "--delay", str(number / ARRIVALS_PER_S),
            cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        children.append(proc)
        pumps.append(asyncio.create_task(pump(proc, reports)))
    parts.callers = [c.pid for c in children]
    results: dict[int, dict[str, Any]] = {}
    ready: set[int] = set()

    async def until(count: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while count() < size:
            message = await asyncio.wait_for(reports.get(), max(0.01, deadline - time.monotonic()))
            if "ready" in message:
                ready.add(message["caller"])
            elif "caller" in message:
                results[message["caller"]] = message

    try:
        # Everyone in (greeting heard) or refused.
        with contextlib.suppress(TimeoutError):
            await until(lambda: len(ready) + len(results), AGENT_JOIN_S + 120)
        level.ramp_s = time.monotonic() - started
        level.answered = len(ready)
        groups = parts.groups()
        tracked = {name: Tracked() for name in groups}
        if not args.no_pin:
            pin(groups["worker"], WORKER_CPU)
        for name, pids in groups.items():
            tracked[name].begin(pids)
        busy0, t0 = cpu_busy(), time.monotonic()
        for child in children:
            await send(child, "go")
        peak = 0.0
        while time.monotonic() - t0 < window_s:
            await asyncio.sleep(1.0)
            groups = parts.groups()
            if not args.no_pin:
                pin(groups["worker"], WORKER_CPU)
            for name, pids in groups.items():
                tracked[name].sample(pids)
            peak = max(peak, sum(_pss(pid) for pid in groups["worker"]))
            for name, pid in parts.others.items():
                level.peak_pss_mb[name] = max(level.peak_pss_mb.get(name, 0.0), _pss(pid))
            if owners is not None:  # while every call's connections are open
                owners.learn(parts.owners())
        for name, pids in parts.groups().items():
            tracked[name].sample(pids)
        busy1, t1 = cpu_busy(), time.monotonic()
        for child in children:
            await send(child, "stop")
            assert child.stdin is not None
            child.stdin.close()  # its reader thread ends, so the process can exit
        level.window_s = t1 - t0
        level.cpu = {name: t.seconds for name, t in tracked.items()}
        level.cores_busy = [
            (b1 - b0) / max(1, n1 - n0) for (b0, n0), (b1, n1) in zip(busy0, busy1, strict=True)
        ]
        level.worker_pss_mb = peak
        with contextlib.suppress(TimeoutError):
            await until(lambda: len(results), 60)
    finally:
        for child in children:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(child.wait(), 30)
            if child.returncode is None:
                child.kill()
                await child.wait()
        for task in pumps:
            task.cancel()
    level.wind_down_s = time.monotonic() - started - level.ramp_s - level.window_s
    for message in results.values():
        if "refused" in message:
            level.refusals[message["refused"]] += 1
        else:
            level.latencies += message["latencies"]
            level.missed += message["missed"]
            level.overlapped += message["overlapped"]
    level.refusals["no_answer_from_caller"] += size - len(results)
    level.refusals = +level.refusals  # drop zero counts
    return level


async def sessions_closed(client: Any, timeout: float) -> bool:
    """Every session of the level closed by the worker: no concurrency slot held."""
    from redisdb import keys

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not await client.zcard(keys.global_active()):
            return True
        await asyncio.sleep(0.5)
    return False


@dataclass
class RedisCost:
    """One level's Redis requests and commands, and the size of what the calls left."""

    count: Count
    calls: int
    calls_so_far: int
    record_bytes: list[int]  # each session record (MEMORY USAGE)
    record_fields: int
    keys_bytes: dict[str, int]  # kind of key -> bytes, after the level


async def redis_cost(client: Any, counted: Count, calls: int, calls_so_far: int) -> RedisCost:
    from redisdb import keys

    sizes: dict[str, int] = {}
    records: list[int] = []
    fields = 0
    async for key in client.scan_iter(match=keys.pattern("*")):
        name = key.decode()
        used = int(await client.memory_usage(name, samples=0) or 0)
        kind = keys.kind_of(name)
        sizes[kind] = sizes.get(kind, 0) + used
        if kind == keys.SESSION:
            records.append(used)
            fields = max(fields, int(await client.hlen(name)))
    return RedisCost(counted, calls, calls_so_far, records, fields, sizes)


# -- the report -----------------------------------------------------------------------------


def fmt_calls_per_core(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def timed(seconds: float) -> str:
    return "missed" if math.isinf(seconds) else f"{ms(seconds)} ms"


def level_row(level: Level, ideal: float, worker_cores: float, rest_pss: float) -> str:
    answered = level.answered
    cpu_per_call = level.cpu.get("worker", 0) / level.window_s / answered if answered else 0
    pss_per_call = (level.worker_pss_mb - rest_pss) / answered if answered else 0
    refused = ", ".join(f"{k} {v}" for k, v in sorted(level.refusals.items())) or "-"
    lost = ", ".join(
        f"{n} {what}" for n, what in ((level.missed, "missed"), (level.overlapped, "talked over"))
        if n
    )  # fmt: skip
    return (
        f"| {level.size} | {answered} | {fmt_calls_per_core(answered / worker_cores)} "
        f"| {len(level.latencies)}{f' ({lost})' if lost else ''} "
        f"| {timed(level.latency_p(50))} | {timed(level.latency_p(95))} "
        f"| {timed(level.overhead_p(50, ideal))} | {timed(level.overhead_p(95, ideal))} "
        f"| {cpu_per_call * 100:.1f} % | {pss_per_call:.0f} MB | {refused} |"
    )


def others_row(level: Level) -> str:
    def share(name: str) -> str:
        return f"{level.cpu.get(name, 0) / level.window_s * 100:.0f} %"

    def pss(name: str) -> str:
        return f"{level.peak_pss_mb.get(name, 0):.0f} MB"

    callers = level.cpu.get("callers", 0) / level.window_s
    per_caller = callers / level.answered if level.answered else 0
    busy = " | ".join(f"{b * 100:.0f} %" for b in level.cores_busy)
    return (
        f"| {level.size} | {share('worker')} | {share('worker main')} "
        f"| {callers * 100:.0f} % ({per_caller * 100:.1f} %) "
        f"| {share('livekit-server')} | {share('token-server')} | {share('vendor fakes')} "
        f"| {share('redis')} | {busy} | {pss('livekit-server')} | {pss('token-server')} "
        f"| {level.ramp_s:.0f} s |"
    )


async def measure(args: argparse.Namespace) -> None:
    from agent.conversation import default_conversation
    from tests.e2e.livekit_stack import running_stack
    from tests.server.support import roomy_caps
    from tests.support import RedisServer, write_policies
    from tests.voice.harness import shared_vad

    started = time.monotonic()
    load_start = os.getloadavg()
    levels = sorted({1, *args.levels})
    max_calls = math.ceil(max(levels) / LIVEKIT_TARGET_LOAD) + 1
    vad_silence_s = float(shared_vad()._opts.min_silence_duration)  # type: ignore[attr-defined]
    ideal = ideal_latency(default_conversation().turns, DELAYS, vad_silence_s)
    if not args.no_pin:
        # Everything started from here on runs on OTHERS_CPU; the worker is moved to its own.
        os.sched_setaffinity(0, {OTHERS_CPU})
    redis = RedisServer().start()

    def progress(text: str) -> None:
        print(f"{time.monotonic() - started:4.0f} s {text}", file=sys.stderr, flush=True)

    measured: list[Level] = []
    stopped = ""
    cost: RedisCost | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="ocf-load-policies-") as policies:
            write_policies(
                Path(policies),
                # The callers share one /24: network aggregates and unjoined caps out of
                # the way, only the global limit (above the largest level) binds.
                limits=roomy_caps({"global": {"concurrent_sessions": max(levels) + 4}}),
            )
            with running_stack(
                redis.url,
                fakes_config=DELAYS.fake_config(),
                env={"POLICIES_DIR": policies, "TRUSTED_PROXIES": "127.0.0.1/32"},
                worker_env={"AGENT_MAX_CALLS": str(max_calls)},
                name="load",
            ) as stack:
                assert stack.worker is not None and stack.worker.proc is not None
                assert stack.fakes is not None and stack.fakes.proc is not None
                assert stack.livekit.proc is not None and stack.token_server.proc is not None
                assert redis.proc is not None
                parts = Components(
                    stack.worker.proc.pid,
                    {
                        "livekit-server": stack.livekit.proc.pid,
                        "token-server": stack.token_server.proc.pid,
                        "vendor fakes": stack.fakes.proc.pid,
                        "redis": redis.proc.pid,
                    },
                )
                if not args.no_pin:
                    pin(pids_in_group(parts.worker_pgid), WORKER_CPU)
                await asyncio.sleep(3)  # the idle job process is up
                rest_pss = sum(_pss(pid) for pid in pids_in_group(parts.worker_pgid))
                progress(f"stack up; worker at rest {rest_pss:.0f} MB PSS")
                import redis.asyncio as aioredis

                own = aioredis.Redis.from_url(redis.url)
                await own.ping()
                owners = Owners()
                owners.learn({"bench": [os.getpid()]})
                address = 1
                monitored = levels[1] if len(levels) > 1 else levels[0]
                for size in levels:
                    window = args.baseline_window if size == 1 else args.window
                    projected = window + 40 + size / ARRIVALS_PER_S
                    if time.monotonic() - started + projected > args.budget:
                        stopped = f"level {size} skipped: the time budget ({args.budget:.0f} s)"
                        break
                    # one level's calls, from their tokens to their close, under MONITOR:
                    # the second level, so scripts, salts and connections are warm
                    watch = Monitor(redis.port) if size == monitored else None
                    with watch or contextlib.nullcontext():
                        level = await run_level(size, window, stack.base_url, parts, args,
                                                address, owners if watch else None)  # fmt: skip
                        closing = time.monotonic()
                        closed = await sessions_closed(own, 60)
                        if watch is not None:
                            await asyncio.sleep(3)  # LiveKit's last webhooks for the rooms
                    if watch is not None:
                        counted = count(watch.lines(), owners, {"bench"})
                        cost = await redis_cost(own, counted, level.answered, address + size - 1)
                    address += size
                    measured.append(level)
                    progress(
                        f"level {size}: {level.answered} answered, {len(level.latencies)} "
                        f"turns, p95 overhead {ms(level.overhead_p(95, ideal))} ms"
                    )
                    if not closed:
                        stopped = f"after level {size}: sessions still open 60 s after it"
                        break
                    progress(
                        f"  ramp {level.ramp_s:.0f} s, window {level.window_s:.0f} s, callers "
                        f"gone {level.wind_down_s:.0f} s, sessions closed "
                        f"{time.monotonic() - closing:.0f} s later"
                    )
                    baseline = measured[0].overhead_p(95, ideal)
                    if size > 1 and not (level.overhead_p(95, ideal) < 2 * baseline):
                        stopped = f"stopped after level {size}: p95 overhead reached 2x"
                        break
                    if size > 1 and level.answered < size:
                        stopped = f"stopped after level {size}: calls refused"
                        break
                await own.aclose()
    finally:
        redis.stop()
    report(args, measured, ideal, rest_pss, max_calls, started, load_start, stopped)
    if cost is not None:
        redis_report(cost)


def report(
    args: argparse.Namespace, levels: list[Level], ideal: float, rest_pss: float,
    max_calls: int, started: float, load_start: tuple[float, float, float], stopped: str,
) -> None:  # fmt: skip
    worker_cores = 1.0 if not args.no_pin else float(os.cpu_count() or 1)
    pinning = (
        f"worker pinned to CPU {WORKER_CPU} (1 core), callers, livekit-server, token server, "
        f"vendor fakes and Redis to CPU {OTHERS_CPU}"
        if not args.no_pin
        else f"nothing pinned: the worker counted as {worker_cores:.0f} cores (the machine's)"
    )
    print(
        f"vendor delays: STT final {ms(DELAYS.stt_final_s)} ms after speech end, LLM first "
        f"token {ms(DELAYS.llm_first_token_s)} ms, TTS first byte {ms(DELAYS.tts_first_byte_s)} "
        f"ms; ideal reply latency {ms(ideal)} ms"
    )
    print(
        f"{pinning}; AGENT_MAX_CALLS={max_calls} (LiveKit offers jobs below its target load "
        f"{LIVEKIT_TARGET_LOAD}: no refusal for load up to {max(lv.size for lv in levels)} "
        f"calls); window {args.window:g} s per level, {args.baseline_window:g} s for the "
        f"single call; callers arrive {ARRIVALS_PER_S:g}/s, {args.callers_per_process} per "
        f"process"
    )
    print(
        f"machine: {os.cpu_count()} cores, load average {load_start[0]:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end; {time.monotonic() - started:.0f} s in all; "
        f"worker at rest (main + idle job process) {rest_pss:.0f} MB PSS"
    )
    print()
    print(
        "| calls | answered | calls per worker core | turns | latency p50 | latency p95 "
        "| overhead p50 | overhead p95 | worker CPU per call | PSS per call | refusals |"
    )
    print("|" + "---|" * 11)
    for level in levels:
        print(level_row(level, ideal, worker_cores, rest_pss))
    print()
    cpus = " | ".join(f"CPU {i} busy (all users)" for i in range(len(levels[0].cores_busy)))
    print(
        "CPU over each window, % of one core: the worker (its main and job processes: "
        "Opus, WebRTC, VAD, plugins) and what runs beside it"
    )
    print()
    print(
        "| calls | worker | of which its main process | callers (per caller) "
        "| livekit-server | token server "
        f"| vendor fakes | redis | {cpus} | livekit-server PSS | token server PSS | ramp |"
    )
    print("|" + "---|" * (11 + len(levels[0].cores_busy)))
    for level in levels:
        print(others_row(level))
    print()
    if stopped:
        print(stopped)
    bias(args, levels)
    baseline = levels[0].overhead_p(95, ideal)
    held = [
        lv for lv in levels
        if lv.answered == lv.size and lv.overhead_p(95, ideal) < 2 * baseline
    ]  # fmt: skip
    best = max((lv.size for lv in held), default=0)
    print(
        f"single call p95 overhead: {ms(baseline)} ms; held under 2x "
        f"({ms(2 * baseline)} ms) up to {best} simultaneous calls on {worker_cores:.0f} "
        f"worker core(s)"
        + ("" if len(held) < len(levels) or stopped else " (the largest level tried)")
    )
    print(f"calls per core through livekit: {fmt_calls_per_core(best / worker_cores)}")


def bias(args: argparse.Namespace, levels: list[Level]) -> None:
    """Say which way the shared machine pushed the figures."""
    if args.no_pin:
        print(
            "nothing pinned: the callers, livekit-server and the fakes took CPU the worker "
            "could have had; calls per core reads low"
        )
        return
    crowded = [lv.size for lv in levels if lv.cores_busy[OTHERS_CPU] >= SATURATED]
    if crowded:
        print(
            f"CPU {OTHERS_CPU} (callers, livekit-server, fakes) saturated at level(s) "
            f"{', '.join(map(str, crowded))}: the callers' own timing waited there, so "
            "latency reads high and calls per core low"
        )
    shared = [
        f"{lv.size}: {max(0.0, lv.cores_busy[WORKER_CPU] - lv.cpu['worker'] / lv.window_s):.0%}"
        for lv in levels
    ]
    print(
        f"other users' processes on the worker's CPU {WORKER_CPU} (busy minus the worker), by "
        f"level: {', '.join(shared)}: time the worker waited for, so calls per core reads "
        "low when these are high"
    )


def redis_report(cost: RedisCost) -> None:
    c = cost.count
    calls = max(1, cost.calls)
    owners: dict[str, Counter[str]] = {}
    for (owner, command), n in c.requests.items():
        owners.setdefault(owner, Counter())[command] += n
    top = ", ".join(f"{name} {n / calls:g}" for name, n in c.commands.most_common(8))
    print()
    print(
        f"Redis per call, over the {cost.calls} calls of level {cost.calls} from their tokens "
        f"to their close (MONITOR): {sum(c.requests.values()) / calls:g} requests, "
        f"{c.in_scripts / calls:g} more commands run inside scripts; most run: {top}. "
        f"Besides: the never-joined sweeper passed {c.sweeps} time(s), {c.sweep_requests} "
        "requests (periodic, not per call). Requests per call by sender:"
    )
    for owner, commands in sorted(owners.items(), key=lambda o: -sum(o[1].values())):
        listed = ", ".join(f"{name} {n / calls:g}" for name, n in commands.most_common())
        print(f"- {owner}: {sum(commands.values()) / calls:g} ({listed})")
    sizes = ", ".join(f"{kind} {n} B" for kind, n in sorted(cost.keys_bytes.items()))
    records = cost.record_bytes
    print(
        f"a closed session record: {statistics.mean(records):.0f} B on average "
        f"(MEMORY USAGE, {min(records)}-{max(records)} B over {len(records)} records, up "
        f"to {cost.record_fields} fields); every key in Redis after {cost.calls_so_far} "
        f"calls, by kind: {sizes}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--levels", default="1,2,4,6,8,10,12", help="simultaneous calls per level (1 first)"
    )
    parser.add_argument("--window", type=float, default=30, help="seconds of talk per level")
    parser.add_argument("--baseline-window", type=float, default=100)
    parser.add_argument("--callers-per-process", type=int, default=3)
    parser.add_argument("--no-pin", action="store_true", help="leave CPU placement to Linux")
    parser.add_argument(
        "--budget", type=float, default=540, help="seconds; no level starts past it"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--address", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--spacing", type=float, default=0.5, help=argparse.SUPPRESS)
    parser.add_argument("--delay", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(caller_process(args))
        return
    try:
        args.levels = [int(n) for n in args.levels.split(",") if n.strip()]
    except ValueError:
        parser.error("--levels takes numbers separated by commas")
    if not args.levels or min(args.levels) < 1 or max(args.levels) > MAX_LEVEL:
        parser.error(f"--levels: at least one level, each of 1 to {MAX_LEVEL} calls")
    if sum(set(args.levels) | {1}) > 254:
        parser.error("--levels: at most 254 calls in a run (one address each)")
    if not args.no_pin and not {WORKER_CPU, OTHERS_CPU} <= os.sched_getaffinity(0):
        parser.error(f"pinning needs CPUs {WORKER_CPU} and {OTHERS_CPU}; try --no-pin")
    ensure_offline()
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(measure(args))


if __name__ == "__main__":
    main()
