"""The Redis client every part uses: short timeouts and no hidden retries.

A hung or dead Redis must surface as an error within about a second (the token server then
answers 503, the worker queues its record for later) instead of stalling behind the
client library's default retries.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

# What "Redis is unavailable or failing" looks like to callers: catch these, never more.
REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError, OSError)

__all__ = ["REDIS_ERRORS", "RedisError", "connect", "eviction_risk"]


# Connections per process. Commands here take well under a millisecond, so a burst of
# hundreds of concurrent requests is served by a few connections; opening one per request
# instead overflows redis-py's default pool (MaxConnectionsError past 100) and makes
# hundreds of simultaneous connects miss the connect timeout, failing every request.
POOL_SIZE = 32


def connect(url: str, timeout_s: float = 0.5) -> Redis:
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=POOL_SIZE,
        # Waiting for a free connection counts against the same budget as a command.
        timeout=timeout_s,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        retry_on_error=[],
        health_check_interval=0,
    )
    return Redis.from_pool(pool)


async def eviction_risk(redis: Redis) -> str | None:
    """Why Redis might drop our keys by itself, or None. Under any maxmemory-policy but
    noeviction a full Redis deletes keys to make room: session records, limit counters,
    salts, blocks, silently; with noeviction it refuses writes instead, which we see
    (503, records retried). Read from INFO, which managed Redis services allow."""
    memory = await redis.info("memory")
    policy = str(memory.get("maxmemory_policy", "unknown"))
    if policy == "noeviction":
        return None
    return (
        f"Redis maxmemory-policy is {policy}: it may evict our keys (session records, "
        "limits, salts, blocks) when its memory is full; set maxmemory-policy noeviction"
    )
