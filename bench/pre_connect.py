"""What the greeting's wait for the pre-connect audio costs (agent/early_audio.py).

A real livekit-server and `python -m agent start` (the real plugins against the vendor
fakes), a visitor with LiveKit's Python SDK (tests/e2e/page_visitor.py) calling again and
again, alternately with a pre-connect buffer (one second of silence: the visitor said
nothing before the agent joined, the usual case) and without one (the baseline, measured in
the same run). Measured at the visitor: the agent becoming active in the room -> the first
audio of its greeting. Prints the medians and their ratio.

    scripts/offline .venv/bin/python -m bench.pre_connect [--calls 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path

import numpy as np

from tests.e2e.livekit_caller import SAMPLE_RATE, request_token
from tests.e2e.livekit_stack import running_stack
from tests.e2e.page_visitor import PageVisitor
from tests.support import RedisServer, write_policies

PERSONA = "realty-desk-en"
SILENCE = np.zeros(SAMPLE_RATE, dtype=np.int16)


async def greeting_after_active(base_url: str, buffer: np.ndarray | None) -> float:
    visitor = PageVisitor()
    await visitor.enter(request_token(base_url, PERSONA), preconnect=buffer)
    try:
        await asyncio.wait_for(visitor.agent_voice.wait(), 60)
        assert visitor.first_voice is not None and visitor.agent_active_at is not None
        return visitor.first_voice - visitor.agent_active_at
    finally:
        await visitor.leave()
        await asyncio.sleep(2)  # the worker closes the call before the next one


async def run(calls: int) -> None:
    redis = RedisServer().start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            many = {"concurrent_sessions": 5, "sessions_per_hour": 500, "sessions_per_day": 500}
            policies = write_policies(Path(tmp), limits={"visitor": many})
            with running_stack(
                redis.url, env={"POLICIES_DIR": str(policies)}, name="bench-pre-connect"
            ) as stack:
                await greeting_after_active(stack.base_url, None)  # warm-up, not counted
                without: list[float] = []
                with_buffer: list[float] = []
                for _ in range(calls):
                    without.append(await greeting_after_active(stack.base_url, None))
                    with_buffer.append(await greeting_after_active(stack.base_url, SILENCE))
    finally:
        redis.stop()
    base, gated = statistics.median(without), statistics.median(with_buffer)
    print(f"agent active -> first greeting audio, at the visitor ({calls} calls each):")
    print(f"  without a pre-connect buffer (baseline)  {base * 1000:6.0f} ms median "
          f"({', '.join(f'{x * 1000:.0f}' for x in without)})")  # fmt: skip
    print(f"  with a pre-connect buffer (1 s silence)  {gated * 1000:6.0f} ms median "
          f"({', '.join(f'{x * 1000:.0f}' for x in with_buffer)}); "
          f"{gated / base:.2f}x the baseline")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5, help="calls of each kind")
    asyncio.run(run(parser.parse_args().calls))


if __name__ == "__main__":
    main()
