"""Session records: one Redis hash per demo session (`{ocf}:sess:<id>`).

Created by admission at mint time (policies/admission.lua) with the retention TTL; later
updates never create a record (a late write for an expired or erased session must not
resurrect it) and never extend its TTL. Its status only moves forward, through the scripts
that own each step (admission, policies/claim.lua, release); see docs/sessions.md.
"""

from __future__ import annotations

from enum import IntEnum

from redis.asyncio import Redis

from policies.replies import text
from redisdb import keys

# HSET only if the record still exists; HSET keeps the key's TTL.
_UPDATE_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""

# The same, and only while the session is open (not released): a late start write must not
# land on a closed record.
_UPDATE_IF_OPEN = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HEXISTS', KEYS[1], 'released_at') == 1 then return 2 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""


class Update(IntEnum):
    MISSING = 0
    WRITTEN = 1
    CLOSED = 2


class SessionStore:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._update = redis.register_script(_UPDATE_IF_EXISTS)
        self._update_open = redis.register_script(_UPDATE_IF_OPEN)

    async def get(self, session_id: str) -> dict[str, str] | None:
        raw = await self._redis.hgetall(keys.session(session_id))
        if not raw:
            return None
        return {text(k): text(v) for k, v in raw.items()}

    async def update(self, session_id: str, fields: dict[str, str]) -> bool:
        """Set fields on an existing record; False if the record is gone."""
        if not fields:
            return await self._redis.exists(keys.session(session_id)) == 1
        args = [part for item in fields.items() for part in item]
        return int(await self._update(keys=[keys.session(session_id)], args=args)) == 1

    async def update_open(self, session_id: str, fields: dict[str, str]) -> Update:
        """Set fields on a record that exists and is not released yet."""
        if not fields:
            raise ValueError("nothing to write")
        args = [part for item in fields.items() for part in item]
        return Update(int(await self._update_open(keys=[keys.session(session_id)], args=args)))
