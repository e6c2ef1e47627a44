"""The long fuzzing run (docs/security.md, "Fuzzing"): the server tests/server/test_fuzz.py fuzzes
(a real `python token_server.py` and a real Redis, limits out of reach), then schemathesis'
CLI against its /openapi.json with the settings of schemathesis.toml, the Redis check of
tests/server/fuzz_hooks.py, and whatever `schemathesis run` options follow:

    scripts/offline .venv/bin/python -m tests.server.fuzz_run --max-examples 3000 --seed 7

Prints the CLI command it runs; exits with the CLI's status.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from server.api_document import URL
from tests.server.fuzz_support import fuzz_policies, fuzz_server_env
from tests.support import ROOT, RedisServer, ServerProcess
from tests.web.support import ensure_bundle


def main(options: list[str]) -> int:
    ensure_bundle()
    redis_server = RedisServer().start()
    try:
        with tempfile.TemporaryDirectory(prefix="ocf-fuzz-") as tmp:
            env = fuzz_server_env(redis_server.url, fuzz_policies(Path(tmp)))
            server = ServerProcess(env=env).start()
            try:
                cli = Path(sys.executable).with_name("schemathesis")
                command = [str(cli), "run", server.base_url + URL, *options]
                print("$", shlex.join(command), flush=True)
                hooks = {
                    "SCHEMATHESIS_HOOKS": "tests.server.fuzz_hooks",
                    "FUZZ_REDIS_URL": redis_server.url,
                }
                return subprocess.run(command, cwd=ROOT, env={**os.environ, **hooks}).returncode
            finally:
                server.stop()
                print(f"server log: {server.log_path}", flush=True)
    finally:
        redis_server.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
