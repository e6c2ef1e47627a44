"""Find the livekit-server binary and run it with a config of ours until told to stop."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from local_livekit.config import LiveKitConfig

ROOT = Path(__file__).resolve().parents[1]
# Where scripts/bootstrap puts the server it builds (git-ignored).
TOOLS_BINARY = ROOT / ".tools" / "bin" / "livekit-server"
# The release scripts/bootstrap builds, and the only one the tests have been run against.
LIVEKIT_SERVER_VERSION = (Path(__file__).parent / "livekit-server.version").read_text().strip()
HOW_TO_GET = (
    "livekit-server not found. `scripts/bootstrap` builds it with Go "
    f"(go install github.com/livekit/livekit-server/cmd/server@{LIVEKIT_SERVER_VERSION}); "
    "without Go, take LiveKit's release binary (github.com/livekit/livekit/releases), "
    "`brew install livekit`, or its Docker image livekit/livekit-server, and set "
    "LIVEKIT_SERVER_BIN to the binary."
)


class LiveKitNotFound(RuntimeError):
    pass


def find_binary() -> Path:
    """LIVEKIT_SERVER_BIN, else .tools/bin/livekit-server, else livekit-server on PATH."""
    explicit = os.environ.get("LIVEKIT_SERVER_BIN")
    if explicit:
        path = Path(explicit)
        if not os.access(path, os.X_OK):
            raise LiveKitNotFound(f"LIVEKIT_SERVER_BIN={explicit} is not an executable file")
        return path
    if os.access(TOOLS_BINARY, os.X_OK):
        return TOOLS_BINARY
    found = shutil.which("livekit-server")
    if found:
        return Path(found)
    raise LiveKitNotFound(HOW_TO_GET)


def wait_for_port(host: str, port: int, timeout_s: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"livekit-server exited with code {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"livekit-server did not listen on {host}:{port} in {timeout_s} s")


class LiveKitServer:
    """`with LiveKitServer(config, log_path) as lk:` runs it; `lk.stop()` ends it."""

    def __init__(self, config: LiveKitConfig, log_path: Path | None = None) -> None:
        self.config = config
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._config_file: Path | None = None

    def start(self, timeout_s: float = 20.0) -> LiveKitServer:
        binary = find_binary()
        handle, name = tempfile.mkstemp(prefix="livekit-", suffix=".yaml")
        with os.fdopen(handle, "w") as out:
            out.write(self.config.to_yaml())
        self._config_file = Path(name)
        with contextlib.ExitStack() as files:
            log: IO[bytes] | int = subprocess.DEVNULL
            if self.log_path is not None:
                log = files.enter_context(self.log_path.open("ab"))
            self.proc = subprocess.Popen(  # noqa: S603 - our binary, our arguments
                [str(binary), "--config", name],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        wait_for_port("127.0.0.1", self.config.port, timeout_s, self.proc)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._config_file is not None:
            self._config_file.unlink(missing_ok=True)
            self._config_file = None

    def __enter__(self) -> LiveKitServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
