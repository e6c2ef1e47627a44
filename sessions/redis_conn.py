"""The Redis client every part uses: short timeouts and no hidden retries.

A hung or dead Redis must surface as an error within about a second (the token server then
answers 503, the worker queues its record for later) instead of stalling behind the
client library's default retries.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

# What "Redis is unavailable or failing" looks like to callers: catch these, never more.
REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError, OSError)

__all__ = ["REDIS_ERRORS", "RedisError", "connect"]


def connect(url: str, timeout_s: float = 0.5) -> Redis:
    return Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        retry_on_error=[],
        health_check_interval=0,
    )
