"""Reading session records for ops: scan, parse, and the status a record really has now.

A record's `status` is what was last written (issued, started, ended, abandoned,
never_joined, given_back). A token nobody used stays `issued` until the sweeper closes it; readers
already count it as `never_joined` once its join window (plus the lease margin) is over,
so stats are right even between sweeps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from redis.asyncio import Redis

from policies.model import Policies
from policies.replies import text
from redisdb import keys

BATCH = 200
CLOSED = ("ended", "abandoned", "never_joined", "given_back")


def _float(fields: dict[str, str], name: str) -> float | None:
    try:
        return float(fields[name])
    except (KeyError, ValueError):
        return None


@dataclass(frozen=True)
class SessionView:
    fields: dict[str, str]

    @property
    def id(self) -> str:
        return self.fields.get("session_id", "")

    @property
    def visitor(self) -> str:
        return self.fields.get("visitor", "")

    @property
    def persona(self) -> str:
        return self.fields.get("persona", "")

    @property
    def issued_at(self) -> float:
        return _float(self.fields, "issued_at") or 0.0

    def num(self, name: str) -> float | None:
        return _float(self.fields, name)

    def status(self, now: float, policies: Policies) -> str:
        status = self.fields.get("status", "issued")
        if status == "issued" and "released_at" not in self.fields:
            s = policies.limits.session
            join_window = self.num("join_window_s") or s.join_window_s
            if now > self.issued_at + join_window + s.lease_margin_s:
                return "never_joined"
        return status

    def duration_s(self) -> float:
        """Seconds of call: the worker's (or the webhook's) duration, else what release
        counted, else nothing (never joined, still running)."""
        for name in ("duration_s", "used_s"):
            value = self.num(name)
            if value is not None:
                return value
        return 0.0


async def scan_sessions(redis: Redis, since: float | None = None) -> AsyncIterator[SessionView]:
    """Every session record (issued at or after `since`), in no particular order."""
    batch: list[str] = []

    async def flush() -> list[SessionView]:
        async with redis.pipeline(transaction=False) as pipe:
            for key in batch:
                pipe.hgetall(key)
            results = await pipe.execute()
        batch.clear()
        views = []
        for raw in results:
            if raw:
                view = SessionView({text(k): text(v) for k, v in raw.items()})
                if since is None or view.issued_at >= since:
                    views.append(view)
        return views

    async for key in redis.scan_iter(match=keys.pattern(keys.SESSION), count=500):
        batch.append(text(key))
        if len(batch) >= BATCH:
            for view in await flush():
                yield view
    if batch:
        for view in await flush():
            yield view
