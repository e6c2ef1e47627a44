"""Lua scripts kept as files beside the code that runs them (policies/*.lua, sales/*.lua),
registered with a client: called by EVALSHA, sent again with EVAL when Redis does not know
them (after a restart or a failover), as redis-py's scripts do."""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis
from redis.commands.core import AsyncScript


def lua_file(redis: Redis, path: Path) -> AsyncScript:
    """The script in `path`; its source stays readable as `.script` (the token server's
    pipelined client sends it itself) and its digest as `.sha`."""
    return redis.register_script(path.read_text(encoding="utf-8"))
