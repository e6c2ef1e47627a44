"""Session records: one Redis hash per demo session (`{ocf}:sess:<id>`).

Created by admission at mint time (policies/admission.lua) with the retention TTL; later
updates never create a record (a late write for an expired or erased session must not
resurrect it) and never extend its TTL.
"""

from __future__ import annotations

from redis.asyncio import Redis

from policies import keys

# HSET only if the record still exists; HSET keeps the key's TTL.
_UPDATE_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class SessionStore:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._update = redis.register_script(_UPDATE_IF_EXISTS)

    async def get(self, session_id: str) -> dict[str, str] | None:
        raw = await self._redis.hgetall(keys.session(session_id))
        if not raw:
            return None
        return {_text(k): _text(v) for k, v in raw.items()}

    async def update(self, session_id: str, fields: dict[str, str]) -> bool:
        """Set fields on an existing record; False if the record is gone."""
        if not fields:
            return await self._redis.exists(keys.session(session_id)) == 1
        args = [part for item in fields.items() for part in item]
        return int(await self._update(keys=[keys.session(session_id)], args=args)) == 1
