"""A worker full at AGENT_MAX_CALLS takes no further call until one ends: through a real
livekit-server, two visitors at once against a worker allowed one call."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis

from tests.e2e.livekit_stack import running_stack
from tests.e2e.support import Visitor, issued
from tests.server.support import roomy_caps
from tests.support import write_policies

pytestmark = pytest.mark.e2e


async def test_a_worker_full_at_its_call_count_declines_the_next_call(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # Every caller here comes from 127.0.0.1: one visitor, allowed several calls at once.
    limits = {"concurrent_sessions": 5, "sessions_per_hour": 50, "sessions_per_day": 50}
    policies = write_policies(tmp_path, limits=roomy_caps({"visitor": limits}))
    with running_stack(
        redis_url,
        env={"POLICIES_DIR": str(policies)},
        worker_env={"AGENT_MAX_CALLS": "1"},
        name="capacity",
    ) as stack:
        first = await Visitor(issued(stack)).join()
        await first.agent_speaks(timeout=30)

        # The worker has its one call: LiveKit finds no available worker for the next.
        second = await Visitor(issued(stack)).join()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(second.agent_tracks.get(), 8)
        # LiveKit either knew the worker was full (its status) or asked and was told so.
        log = stack.logs()["livekit-server.log"]
        assert "no worker available to handle job" in log or "no servers available" in log
        await second.leave()

        # The first call ends (the visitor hangs up): the worker takes calls again.
        await first.leave()
        third: Visitor | None = None
        for _ in range(10):
            await asyncio.sleep(1)
            third = await Visitor(issued(stack)).join()
            try:
                await asyncio.wait_for(third.agent_tracks.get(), 6)
                break
            except TimeoutError:
                await third.leave()  # the worker had not noticed the end yet
                third = None
        assert third is not None, "the worker never took a call again"
        await third.leave()
