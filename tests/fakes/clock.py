"""Timing shared by the vendor fakes."""

from __future__ import annotations

import asyncio
import time


async def sleep_until(wall: float) -> None:
    """Wait until time.monotonic() reaches `wall` (at once if it has).

    The fakes schedule each message on the clock (first token + i * gap, speech end +
    final delay) rather than sleeping gap after gap: every sleep overshoots by a
    scheduler tick, and a benchmark would charge the accumulated drift to the agent."""
    delay = wall - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
