"""Proof that nothing left the machine: every socket connect and name lookup, audited.

Python's audit hooks (PEP 578) see each `socket.connect` and `socket.getaddrinfo` made by
any library in the process (aiohttp, httpx, redis, the LiveKit SDK's Python side), with no
monkeypatching. A hook cannot be removed once added, so one hook is installed per process
and records only while an audit is open. (Sockets opened by LiveKit's native FFI library
are invisible to it; the voice tests use no LiveKit room, so none are opened.)
"""

from __future__ import annotations

import ipaddress
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@dataclass
class LoopbackAudit:
    connects: list[tuple[str, int]] = field(default_factory=list)
    lookups: list[str] = field(default_factory=list)
    unix_sockets: int = 0

    @property
    def outside(self) -> list[str]:
        """Every destination that was not this machine's loopback."""
        found = [f"connect {h}:{p}" for h, p in self.connects if not is_loopback(h)]
        found += [f"lookup {h}" for h in self.lookups if not is_loopback(h)]
        return found


_lock = threading.Lock()
_open: list[LoopbackAudit] = []
_installed = False


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if not _open or event not in ("socket.connect", "socket.getaddrinfo"):
        return
    if event == "socket.connect":
        address = args[1]
        for audit in _open:
            if isinstance(address, tuple) and len(address) >= 2:
                audit.connects.append((str(address[0]), int(address[1])))
            else:  # AF_UNIX path: local by construction
                audit.unix_sockets += 1
    else:
        host = args[0]
        if host is None:
            return
        text = host.decode(errors="replace") if isinstance(host, bytes) else str(host)
        for audit in _open:
            audit.lookups.append(text)


@contextmanager
def audit_connections() -> Iterator[LoopbackAudit]:
    global _installed
    with _lock:
        if not _installed:
            sys.addaudithook(_hook)
            _installed = True
    audit = LoopbackAudit()
    _open.append(audit)
    try:
        yield audit
    finally:
        _open.remove(audit)
