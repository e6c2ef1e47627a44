"""`make run` on a fresh machine: `scripts/run` itself, as a user runs it.

No Redis answers (it starts its own), no LiveKit runs (it starts livekit-server on
loopback with development keys it generates and keeps in RUN_DIR), and the caller is
LiveKit's Python SDK joining with the token the page would get. Without provider keys the
call connects and the script has said once that no agent will answer; with them (pointed
at the vendor fakes) the agent joins and greets. SIGTERM leaves no process behind.

The two call tests share one RUN_DIR, in file order: the keys the first run generated are
the ones the second run uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from livekit import api, rtc

from local_livekit.keys import read_keys
from tests.e2e.livekit_stack import OUTPUT, FakesProcess, require_offline
from tests.support import ROOT, free_port

pytestmark = pytest.mark.e2e

PERSONA = "realty-desk-en"
NO_AGENT = "Calls will connect but no agent will answer"
SAMPLE_RATE = 48_000


@pytest.fixture(scope="module", autouse=True)
def _offline() -> None:
    require_offline()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `.run` of these runs (scripts/run creates it)."""
    return tmp_path_factory.mktemp("make-run") / ".run"


# --- the processes of one run ----------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    pid: int
    start_ticks: str
    cmdline: str


def _stat(pid: int) -> tuple[str, int, str] | None:
    """(state, ppid, start time) of a process, None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), fields[19]


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    return ""


def _all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def alive(proc: Proc) -> bool:
    """Still running (a zombie has exited; the same pid with another start is not it)."""
    stat = _stat(proc.pid)
    return stat is not None and stat[2] == proc.start_ticks and stat[0] != "Z"


@dataclass
class RunScript:
    """`scripts/run` with its own environment; output in test-output/e2e/make-run-<name>/."""

    name: str
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    # In every process it starts (but livekit-server, which gets a clean environment).
    marker: str = field(default_factory=lambda: uuid.uuid4().hex)
    seen: set[Proc] = field(default_factory=set)

    @property
    def log_path(self) -> Path:
        return OUTPUT / f"make-run-{self.name}" / "run.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.env['PORT']}"

    def start(self) -> RunScript:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(ROOT / "scripts" / "run")],
                cwd=ROOT, env={**self.env, "OCF_MAKE_RUN_TEST": self.marker},
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise AssertionError(f"scripts/run exited ({code}):\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} after {timeout} s:\n{self.output()}")
            time.sleep(0.1)

    def processes(self) -> set[Proc]:
        """What runs now on its behalf: its descendants, and whatever carries its marker
        (a process whose parent already died is no longer a descendant)."""
        assert self.proc is not None
        table = {pid: stat for pid in _all_pids() if (stat := _stat(pid)) is not None}
        found: set[Proc] = set()
        frontier = [self.proc.pid]
        while frontier:
            parent = frontier.pop()
            for pid, (_, ppid, start) in table.items():
                if ppid == parent:
                    found.add(Proc(pid, start, _cmdline(pid)))
                    frontier.append(pid)
        needle = f"OCF_MAKE_RUN_TEST={self.marker}".encode()
        for pid, (state, _, start) in table.items():
            with contextlib.suppress(OSError):
                if state != "Z" and needle in Path(f"/proc/{pid}/environ").read_bytes():
                    found.add(Proc(pid, start, _cmdline(pid)))
        found = {p for p in found if alive(p)}
        self.seen |= found
        return found

    def terminate(self, timeout: float = 90.0) -> int:
        """SIGTERM to the script alone, as `kill` or a service manager sends it."""
        assert self.proc is not None
        self.processes()
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def leftovers(self) -> list[Proc]:
        deadline = time.monotonic() + 5  # an orphan's last exit may take a moment
        while True:
            left = sorted((p for p in self.seen | self.processes() if alive(p)), key=str)
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.1)

    def kill_everything(self) -> None:
        """After a failed test: nothing may outlive it."""
        if self.proc is not None and self.proc.poll() is None:
            self.processes()
            self.proc.kill()
            self.proc.wait(10)
        for proc in self.seen | (self.processes() if self.proc else set()):
            with contextlib.suppress(ProcessLookupError):
                if alive(proc):
                    os.kill(proc.pid, signal.SIGKILL)


def run_env(run_dir: Path, **extra: str) -> dict[str, str]:
    """A fresh machine's settings: nothing configured but free ports and RUN_DIR."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_BASE_URL")}
    env.update(
        RUN_DIR=str(run_dir),
        HOST="127.0.0.1",
        PORT=str(free_port()),
        LIVEKIT_PORT=str(free_port()),
        LIVEKIT_URL="",
        LIVEKIT_API_KEY="",
        LIVEKIT_API_SECRET="",
        # Nothing answers there: scripts/run starts a redis-server of its own.
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        ENVIRONMENT="development",
        OPENAI_API_KEY="",
        DEEPGRAM_API_KEY="",
        AGENT_HEALTH_PORT=str(free_port()),
        ALLOWED_ORIGINS="",
        TRUSTED_PROXIES="",
        OPS_TOKEN="",
    )
    env.update(extra)
    return env


@contextlib.contextmanager
def running(name: str, env: dict[str, str]) -> Iterator[RunScript]:
    run = RunScript(name, env).start()
    try:
        yield run
    finally:
        run.kill_everything()


def stop_and_check(run: RunScript, expected: set[str]) -> None:
    """SIGTERM: the script exits and every process it started is gone."""
    names = " ".join(p.cmdline for p in run.processes())
    for what in expected:
        assert what in names, f"{what} not running: {names}"
    code = run.terminate()
    assert code == 128 + signal.SIGTERM, run.output()
    assert run.leftovers() == [], run.output()
    assert "run: stopped" in run.output()


def get_token(run: RunScript) -> dict[str, Any]:
    answer = httpx.post(run.base_url + "/api/token", json={"agent": PERSONA}, timeout=30)
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


def check_page(run: RunScript, livekit_url: str) -> None:
    page = httpx.get(run.base_url + "/", timeout=30)
    assert page.status_code == 200
    csp = page.headers["content-security-policy"].split("; ")
    connect_src = next(d for d in csp if d.startswith("connect-src"))
    assert livekit_url in connect_src.split()


# --- the caller --------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def caller(token: dict[str, Any]) -> AsyncIterator[rtc.Room]:
    """LiveKit's Python SDK in the page's place: joins and publishes a microphone that
    sends quiet noise for as long as it is connected."""
    room = rtc.Room()
    await room.connect(token["server_url"], token["participant_token"])
    source = rtc.AudioSource(SAMPLE_RATE, 1)
    track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    await room.local_participant.publish_track(track, options)

    async def speak_softly() -> None:
        noise = np.random.default_rng(7)
        while True:
            samples = noise.normal(0, 30, SAMPLE_RATE // 100).astype(np.int16)
            await source.capture_frame(
                rtc.AudioFrame(samples.tobytes(), SAMPLE_RATE, 1, len(samples))
            )

    feeding = asyncio.create_task(speak_softly())
    try:
        yield room
    finally:
        feeding.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeding
        await room.disconnect()


async def microphone_published(run_dir: Path, token: dict[str, Any], identity: str) -> bool:
    """What LiveKit itself says (room API, with the keys kept in RUN_DIR)."""
    key, secret = read_keys(run_dir / "livekit-keys")
    http_url = token["server_url"].replace("ws://", "http://")
    async with api.LiveKitAPI(http_url, key, secret) as lk:
        listed = await lk.room.list_participants(
            api.ListParticipantsRequest(room=token["room_name"])
        )
    return any(
        track.source == api.TrackSource.MICROPHONE
        for p in listed.participants
        if p.identity == identity
        for track in p.tracks
    )


async def agent_speech(room: rtc.Room, timeout: float) -> float:
    """Seconds of audible audio from the agent participant's track (stops after 0.5 s)."""
    deadline = time.monotonic() + timeout
    track: rtc.Track | None = None
    while track is None:
        assert time.monotonic() < deadline, "no agent audio track"
        for participant in room.remote_participants.values():
            if participant.kind != rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
                continue
            for publication in participant.track_publications.values():
                if publication.kind == rtc.TrackKind.KIND_AUDIO and publication.track:
                    track = publication.track
        await asyncio.sleep(0.1)
    audible = 0.0
    stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1)
    try:
        while audible < 0.5:
            left = deadline - time.monotonic()
            assert left > 0, f"only {audible:.2f} s of audible agent audio"
            event = await asyncio.wait_for(anext(aiter(stream)), left)
            frame = event.frame
            samples = np.frombuffer(frame.data, dtype=np.int16).astype(np.float64)
            if samples.size and np.sqrt(np.mean(samples**2)) > 300:
                audible += frame.samples_per_channel / frame.sample_rate
    finally:
        await stream.aclose()
    return audible


# --- the tests ---------------------------------------------------------------------------


async def test_without_provider_keys_a_call_connects_and_the_script_says_why_no_agent(
    run_dir: Path,
) -> None:
    env = run_env(run_dir)
    livekit_url = f"ws://127.0.0.1:{env['LIVEKIT_PORT']}"
    with running("no-keys", env) as run:
        await asyncio.to_thread(run.wait_for_output, "run: demo page: http://127.0.0.1:", 120)
        assert run.output().count(NO_AGENT) == 1, run.output()
        assert "OPENAI_API_KEY and DEEPGRAM_API_KEY are not set" in run.output()

        keys_file = run_dir / "livekit-keys"
        assert keys_file.stat().st_mode & 0o777 == 0o600
        key, secret = read_keys(keys_file)
        check_page(run, livekit_url)
        token = get_token(run)
        assert token["server_url"] == livekit_url
        claims = api.TokenVerifier(key, secret).verify(token["participant_token"])

        async with caller(token) as room:
            assert room.connection_state == rtc.ConnectionState.CONN_CONNECTED
            assert room.local_participant.identity == claims.identity
            deadline = time.monotonic() + 30
            while not await microphone_published(run_dir, token, claims.identity):
                assert time.monotonic() < deadline, "LiveKit never listed the microphone"
                await asyncio.sleep(0.2)
            # Ctrl-C with a call up: everything still stops.
            await asyncio.to_thread(
                stop_and_check, run, {"livekit-server", "redis-server", "token_server.py"}
            )
        assert "agent start" not in " ".join(p.cmdline for p in run.seen)
        assert "ended 1 call(s) in progress" in run.output()
        assert run.output().count(NO_AGENT) == 1


async def test_with_provider_keys_the_agent_joins_and_greets(run_dir: Path) -> None:
    keys_file = run_dir / "livekit-keys"
    kept = keys_file.read_text() if keys_file.exists() else None
    fakes = FakesProcess({}).start()
    try:
        env = run_env(
            run_dir,
            **fakes.env(),
            AGENT_NUM_IDLE_PROCESSES="1",
            # The shared test machine may be busy: never decline a call for load.
            AGENT_LOAD_THRESHOLD="1",
        )
        with running("with-keys", env) as run:
            # The script gives the page's address once the worker has registered.
            await asyncio.to_thread(run.wait_for_output, "run: demo page: http://127.0.0.1:", 240)
            assert NO_AGENT not in run.output()
            if kept is not None:
                assert keys_file.read_text() == kept, "the first run's keys were replaced"
            key, secret = read_keys(keys_file)
            token = get_token(run)
            api.TokenVerifier(key, secret).verify(token["participant_token"])

            async with caller(token) as room:
                assert await agent_speech(room, timeout=90) >= 0.5
                await asyncio.to_thread(
                    stop_and_check,
                    run,
                    {"livekit-server", "redis-server", "token_server.py", "-m agent start"},
                )
            # The worker's job processes were there, and went with it.
            assert sum("multiprocessing" in p.cmdline for p in run.seen) >= 1
            # Stopping ended the call: the worker recorded it while Redis was still up.
            out = run.output()
            assert "ended 1 call(s) in progress" in out
            assert '"message": "call ended"' in out
            assert '"message": "session recorded"' in out
    finally:
        fakes.stop()


def test_a_remote_livekit_url_starts_no_livekit_server(tmp_path: Path) -> None:
    remote = "wss://ocf-demo.livekit.cloud"
    env = run_env(
        tmp_path / ".run",
        LIVEKIT_URL=remote,
        LIVEKIT_API_KEY="APIcloudkey",
        LIVEKIT_API_SECRET="cloud-secret-0123456789abcdefghijklmnopqrstuv",
    )
    with running("remote", env) as run:
        run.wait_for_output("run: demo page: http://127.0.0.1:", 120)
        assert f"LiveKit at {remote} (no local livekit-server)" in run.output()
        check_page(run, remote)
        assert get_token(run)["server_url"] == remote
        stop_and_check(run, {"redis-server", "token_server.py"})
    assert "livekit-server" not in " ".join(p.cmdline for p in run.seen)
    assert not (tmp_path / ".run" / "livekit-keys").exists()


def test_a_taken_livekit_port_is_said_plainly_and_nothing_starts(tmp_path: Path) -> None:
    env = run_env(tmp_path / ".run")
    port = int(env["LIVEKIT_PORT"])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with running("port-taken", env) as run:
            assert run.proc is not None
            code = run.proc.wait(120)
            out = run.output()
            assert code == 1, out
            assert f"port {port} (LIVEKIT_PORT, our livekit-server) is taken" in out
            assert "Stop it, or move ours: LIVEKIT_PORT=7890 make run" in out
            assert run.leftovers() == []
            assert "demo page" not in out and "redis-server" not in out
