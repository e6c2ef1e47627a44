"""The whole call path on loopback, as processes: a real livekit-server, `python
token_server.py`, `python -m agent start` with the real plugins pointed at the vendor fakes
(in a process of their own), and a Redis. Used by the end-to-end tests (marker `e2e`) and
the LiveKit benchmarks.

Everything here must run inside `scripts/offline` (a network namespace where nothing but
127.0.0.0/8 exists): `require_offline()` fails loudly otherwise, so a run that could leak
a packet never starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from local_livekit import LiveKitConfig, LiveKitServer
from local_livekit.process import wait_for_port
from tests.support import ROOT, ServerProcess, free_port, wait_until

OUTPUT = ROOT / "test-output" / "e2e"

# Test credentials shared by livekit-server, the token server and the worker.
API_KEY = "APIe2etestkey"
API_SECRET = "e2e-test-secret-0123456789abcdefghijklmnopqrstuvwxyz"
AGENT_NAME = "ocf-e2e-agent"


def network_addresses() -> list[str]:
    """Every address of every interface in this process's network namespace."""
    out = subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True, check=True)
    return [info["local"] for link in json.loads(out.stdout) for info in link["addr_info"]]


def routes() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for family in ("-4", "-6"):
        out = subprocess.run(
            ["ip", "-j", family, "route", "show", "table", "all"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        found += json.loads(out.stdout or "[]")
    return found


def off_loopback(address: str) -> bool:
    import ipaddress

    return not ipaddress.ip_address(address.split("%")[0]).is_loopback


def require_offline() -> None:
    """Refuse to run unless this namespace has no address and no route off 127.0.0.0/8."""
    outside = [a for a in network_addresses() if off_loopback(a)]
    gateways = [r for r in routes() if r.get("gateway")]
    if outside or gateways:
        raise RuntimeError(
            "the LiveKit end-to-end tests and benchmarks run only where nothing but "
            f"127.0.0.0/8 exists (found {outside or gateways}); run them through "
            "scripts/offline (make test does)"
        )


def wait_for_line(
    path: Path, text: str, timeout: float, proc: subprocess.Popen[bytes], offset: int = 0
) -> None:
    """`text` written to `path` past byte `offset` (a restarted process appends to its log)."""
    wanted = text.encode()

    def seen() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{path.name}: process exited ({proc.returncode})")
        return wanted in path.read_bytes()[offset:]

    wait_until(seen, timeout, interval=0.1)


@dataclass
class FakesProcess:
    """The OpenAI and Deepgram fakes in a process of their own (tests.fakes.server)."""

    config: dict[str, Any]
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    _config_path: Path | None = None

    def start(self) -> FakesProcess:
        handle, name = tempfile.mkstemp(prefix="ocf-fakes-", suffix=".json")
        with os.fdopen(handle, "w") as out:
            json.dump(self.config, out)
        self._config_path = Path(name)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.server", "--config", name],
            cwd=ROOT, stdout=subprocess.PIPE,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith(b"ready "):
            raise RuntimeError(f"vendor fakes did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        if self._config_path is not None:
            self._config_path.unlink(missing_ok=True)

    def get(self, path: str) -> Any:
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=5).json()

    def env(self) -> dict[str, str]:
        return {
            "OPENAI_BASE_URL": f"http://127.0.0.1:{self.port}/v1",
            "OPENAI_API_KEY": "sk-local-fake-key",
            "DEEPGRAM_BASE_URL": f"ws://127.0.0.1:{self.port}/v1/listen",
            "DEEPGRAM_API_KEY": "local-fake-deepgram-key",
        }


@dataclass
class WorkerProcess:
    """`python -m agent start`, as production runs it, in its own process group (so a test
    can SIGKILL the worker and every job process it started, as a crash would)."""

    env: Mapping[str, str]
    log_path: Path
    health_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> WorkerProcess:
        """Start (or, after kill/stop, start again: a new worker on the same stack)."""
        logged = self.log_path.stat().st_size if self.log_path.exists() else 0
        env = {
            **os.environ,
            **self.env,
            "AGENT_HEALTH_PORT": str(self.health_port),
        }
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent", "start"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        wait_for_line(self.log_path, "registered worker", timeout, self.proc, logged)
        return self

    def kill(self) -> None:
        """SIGKILL the worker and its job processes at once: a crash, not a shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.proc is not None:
                os.killpg(self.proc.pid, signal.SIGKILL)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Stack:
    redis_url: str
    livekit: LiveKitServer
    token_server: ServerProcess
    fakes: FakesProcess | None
    worker: WorkerProcess | None
    workdir: Path

    @property
    def livekit_url(self) -> str:
        return self.livekit.config.url

    @property
    def base_url(self) -> str:
        return self.token_server.base_url

    def room_api(self) -> Any:
        from livekit import api

        return api.LiveKitAPI(self.livekit.config.http_url, API_KEY, API_SECRET)

    def room_names(self) -> list[str]:
        """The rooms livekit-server has now (from any thread, event loop or not)."""

        async def names() -> list[str]:
            from livekit import api

            lk = self.room_api()
            try:
                rooms = await lk.room.list_rooms(api.ListRoomsRequest())
                return [room.name for room in rooms.rooms]
            finally:
                await lk.aclose()

        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, names()).result(30)

    def ice_candidates(self) -> dict[str, list[str]]:
        """Per participant, the address of every ICE candidate livekit-server logged for its
        connections (local and remote; LiveKit masks the end of remote addresses, as in
        `127.0....`, which still shows the network)."""
        found: dict[str, list[str]] = {}
        log = self.livekit.log_path
        assert log is not None
        for line in log.read_text(errors="replace").splitlines():
            if "Candidates" not in line:
                continue
            entry = json.loads(line)
            for name, candidates in entry.items():
                if name.endswith("Candidates"):
                    for candidate in candidates:
                        match = _LOGGED_CANDIDATE.search(candidate)
                        assert match is not None, f"unreadable candidate: {candidate}"
                        found.setdefault(entry["participant"], []).append(match.group(1))
        return found

    def logs(self) -> dict[str, str]:
        return {
            path.name: path.read_text(errors="replace")
            for path in sorted(self.workdir.glob("*.log"))
        }


# "[local][selected:1] udp4 host 127.0.0.1:50087 (...)", "[remote] udp prflx 127.0....:59555"
_LOGGED_CANDIDATE = re.compile(r"\b(?:udp|tcp)\d? (?:host|srflx|prflx|relay) (\S+):\d+")


def stack_env(redis_url: str, livekit_url: str, **extra: str) -> dict[str, str]:
    return {
        "ENVIRONMENT": "development",
        "REDIS_URL": redis_url,
        "LIVEKIT_URL": livekit_url,
        "LIVEKIT_API_KEY": API_KEY,
        "LIVEKIT_API_SECRET": API_SECRET,
        "AGENT_NAME": AGENT_NAME,
        "TRUSTED_PROXIES": "",
        "ALLOWED_ORIGINS": "",
        **extra,
    }


def fresh_log_dir(name: str) -> Path:
    """test-output/e2e/<name>/, without the logs of a previous run."""
    workdir = OUTPUT / name
    workdir.mkdir(parents=True, exist_ok=True)
    for old in workdir.glob("*.log"):
        old.unlink()
    return workdir


@contextlib.contextmanager
def running_stack(
    redis_url: str,
    *,
    fakes_config: dict[str, Any] | None = None,
    with_worker: bool = True,
    env: Mapping[str, str] | None = None,
    worker_env: Mapping[str, str] | None = None,
    name: str = "stack",
    webhook_urls: Sequence[str] = (),
) -> Iterator[Stack]:
    """Start livekit-server, the token server (LiveKit's webhooks pointed at it), the vendor
    fakes and the worker; stop them all, whatever happens. Logs go to test-output/e2e/.
    `webhook_urls`: more receivers LiveKit delivers every event to (e.g. a test recording
    the exact deliveries)."""
    require_offline()
    workdir = fresh_log_dir(name)
    server_port = free_port()
    config = LiveKitConfig(
        API_KEY,
        API_SECRET,
        port=free_port(),
        stun_port=free_port(),
        webhook_urls=(f"http://127.0.0.1:{server_port}/livekit/webhook", *webhook_urls),
    )
    livekit = LiveKitServer(config, workdir / "livekit-server.log")
    common = stack_env(redis_url, config.url, **(env or {}))
    token_server = ServerProcess(
        env={**common, "LOG_LEVEL": "INFO"}, port=server_port, log_path=workdir / "token-server.log"
    )
    fakes = FakesProcess(fakes_config or {}) if with_worker else None
    worker = None
    try:
        livekit.start()
        token_server.start()
        if fakes is not None:
            fakes.start()
            worker = WorkerProcess(
                {
                    **common,
                    **fakes.env(),
                    "AGENT_NUM_IDLE_PROCESSES": "1",
                    # Full by call count, not CPU: the shared test machine is often at
                    # 100 % and a CPU-loaded worker would decline every call.
                    "AGENT_MAX_CALLS": "4",
                    **(worker_env or {}),
                },
                workdir / "worker.log",
            ).start()
        wait_for_port("127.0.0.1", config.port, 5, livekit.proc)  # type: ignore[arg-type]
        yield Stack(redis_url, livekit, token_server, fakes, worker, workdir)
    finally:
        for stop in (
            worker.stop if worker else None,
            fakes.stop if fakes else None,
            token_server.stop,
            livekit.stop,
        ):
            if stop is not None:
                with contextlib.suppress(Exception):
                    stop()


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
