"""A livekit-server on this machine, for `make run`, the end-to-end tests and the benchmarks.

LiveKit's own server (a Go module, built by `scripts/bootstrap` into
`.tools/bin/livekit-server`) runs bound to loopback with ICE restricted to 127.0.0.0/8:
`config.py` writes its configuration, `process.py` finds the binary and runs it.
"""

from local_livekit.config import LiveKitConfig, dev_keys
from local_livekit.process import LiveKitServer, find_binary

__all__ = ["LiveKitConfig", "LiveKitServer", "dev_keys", "find_binary"]
