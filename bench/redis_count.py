"""What a call costs our Redis: every command, counted with MONITOR, attributed to the
process that sent it.

`Monitor` runs `redis-cli monitor` into a file for as long as it is open. MONITOR prints each
command a client sends, and each command a Lua script runs (as `[0 lua]`), so one admission
is one request (EVALSHA) and the commands inside it. `Owners` maps a client's local TCP port to
its process (through /proc/net/tcp and each process's socket inodes), so a request is charged
to the token server, the worker's main process or a job process, and the bench's own
requests are left out.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

# 1733010000.123456 [0 127.0.0.1:51262] "EVALSHA" "69c1..." "5"   /   [0 lua] "ZADD" ...
_LINE = re.compile(r'^\d+\.\d+ \[\d+ (?P<who>[^\]]+)\] "(?P<command>[^"]+)"(?P<args>.*)$')


@dataclass
class Monitor:
    port: int
    path: Path = field(default_factory=lambda: Path(tempfile.mkstemp(suffix=".monitor")[1]))
    proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Monitor:
        binary = shutil.which("redis-cli")
        if binary is None:
            raise RuntimeError("redis-cli is not installed (it comes with redis-server)")
        with self.path.open("wb") as out:
            self.proc = subprocess.Popen(
                [binary, "-p", str(self.port), "monitor"], stdout=out, stderr=subprocess.DEVNULL
            )
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)

    def lines(self) -> list[tuple[str, str, str]]:
        """(client 'ip:port' or 'lua', command, the rest) for each command seen."""
        out = []
        for line in self.path.read_text(errors="replace").splitlines():
            match = _LINE.match(line)
            if match:
                who = match["who"].split()[-1]
                out.append((who, match["command"].upper(), match["args"]))
        self.path.unlink(missing_ok=True)
        return out


def socket_ports(pids: list[int]) -> dict[int, int]:
    """Local TCP port -> pid, for the sockets these processes hold now."""
    inodes: dict[str, int] = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    target = fd.readlink().name
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = pid
        except OSError:
            continue
    ports: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            inode = fields[9]
            if inode in inodes:
                ports[int(fields[1].rsplit(":", 1)[1], 16)] = inodes[inode]
    return ports


@dataclass
class Owners:
    """Which process each Redis client port belongs to, learnt while they are connected."""

    names: dict[int, str] = field(default_factory=dict)  # port -> owner

    def learn(self, groups: dict[str, list[int]]) -> None:
        for owner, pids in groups.items():
            for port in socket_ports(pids):
                self.names.setdefault(port, owner)

    def of(self, who: str) -> str:
        if who == "lua":
            return "lua"
        port = int(who.rsplit(":", 1)[1]) if ":" in who else -1
        return self.names.get(port, "other")


@dataclass
class Count:
    # (owner, command) -> requests
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    commands: Counter[str] = field(default_factory=Counter)  # command -> runs (all)
    in_scripts: int = 0
    # the token servers' never-joined sweeper (ops/reconcile.py: TIME, ZRANGE of the
    # global lease set, one HMGET per open session; the pepper's SET): periodic, not per call
    sweeps: int = 0
    sweep_requests: int = 0


def _sweeping(command: str, args: str) -> bool:
    return (
        (command == "ZRANGE" and "gact" in args)
        or (command == "HMGET" and "join_window_s" in args)
        # each sweep also re-asserts the pepper's fingerprint (policies/pseudonyms.py)
        or (command == "SET" and ":pepper:" in args)
    )


def count(lines: list[tuple[str, str, str]], owners: Owners, leave_out: set[str]) -> Count:
    """Requests per owner (without the commands scripts run, nor the sweeper's, nor those of
    the `leave_out` owners and their scripts) and every command run."""
    out = Count()
    skipping = False
    last: dict[str, str] = {}  # client -> its previous command (a sweep starts with TIME)
    for who, command, args in lines:
        if who == "lua":
            if not skipping:
                out.in_scripts += 1
                out.commands[command] += 1
            continue
        owner = owners.of(who)
        skipping = owner in leave_out
        previous, last[who] = last.get(who), command
        if skipping:
            continue
        out.commands[command] += 1
        if _sweeping(command, args):
            out.sweep_requests += 1
            if command == "ZRANGE":
                out.sweeps += 1
                if previous == "TIME":  # the sweep's clock read, charged to the call first
                    out.requests[(owner, "TIME")] -= 1
                    out.sweep_requests += 1
            continue
        out.requests[(owner, command)] += 1
    out.requests = +out.requests  # drop what a sweep's TIME took back to zero
    return out
