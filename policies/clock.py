"""The clock every policy window is read by: Redis' own."""

from __future__ import annotations

from redis.asyncio import Redis


async def redis_clock(redis: Redis) -> float:
    """Redis' clock (TIME), in seconds: the one clock every process and script shares.
    Admission stamps records and buckets with it, so anything compared with those stamps
    (the never-joined sweeper, salt periods) must read it too, never the host's clock."""
    seconds, micros = await redis.time()
    return float(seconds) + micros / 1_000_000
