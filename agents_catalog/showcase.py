"""Sales' run-time showcase override: enable/disable, feature and reorder personas without
touching the catalogue files (which stay the defaults) and without a restart.

The override is one Redis hash (`{ocf}:showcase`): persona id -> JSON of the fields that
differ from the file ({"enabled": false}, {"order": 5, "featured": true}...). Each change
renews the key's TTL (policies/ops.yaml `showcase.ttl_days`), so a forgotten override
ends on its own. Readers (token server, worker) keep a copy for `cache_s` seconds: a change
shows everywhere within that delay, and a Redis outage serves the last copy read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.asyncio import Redis

from agents_catalog.loader import Catalog
from agents_catalog.models import Persona
from policies.replies import text
from redisdb import keys
from redisdb.connection import REDIS_ERRORS

log = logging.getLogger("showcase")

ORDER_MAX = 10_000


class ShowcaseError(ValueError):
    """A change that cannot be made (unknown persona, bad value); nothing was changed."""


class Override(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool | None = None
    featured: bool | None = None
    order: int | None = Field(default=None, ge=0, le=ORDER_MAX)

    def fields(self) -> dict[str, object]:
        return self.model_dump(exclude_none=True)


@dataclass(frozen=True)
class ShowcaseRow:
    id: str
    display_name: str
    language: str
    enabled: bool
    featured: bool
    order: int
    overridden: list[str]  # which of the three fields come from the override

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "display_name": self.display_name,
            "language": self.language,
            "enabled": self.enabled,
            "featured": self.featured,
            "order": self.order,
            "overridden": self.overridden,
        }


def apply(base: Catalog, overrides: dict[str, Override]) -> Catalog:
    personas: dict[str, Persona] = {}
    for persona in base:
        override = overrides.get(persona.id)
        personas[persona.id] = persona.model_copy(update=override.fields()) if override else persona
    return Catalog(personas)


class Showcase:
    def __init__(
        self,
        redis: Redis,
        base: Catalog,
        *,
        ttl_s: int,
        cache_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self.base = base
        self._ttl_s = ttl_s
        self._cache_s = cache_s
        self._clock = clock
        # (read at, overrides, catalogue with them applied): the token path asks for the
        # catalogue on every request, so it is built once per read, not per request.
        self._cached: tuple[float, dict[str, Override], Catalog] | None = None
        self._lock = asyncio.Lock()
        # Called on every failed read (the token server counts it in its Redis error metric).
        self.on_error: Callable[[], None] | None = None

    async def _read(self) -> dict[str, Override]:
        raw = await self._redis.hgetall(keys.showcase())
        overrides: dict[str, Override] = {}
        for field, value in raw.items():
            persona_id = text(field)
            if self.base.get(persona_id) is None:
                continue  # a persona removed from the files since: nothing to override
            try:
                overrides[persona_id] = Override.model_validate_json(text(value))
            except ValidationError:
                # Written by hand or by an older version: ignore it rather than break the
                # catalogue; `ops showcase list` shows the file defaults for it.
                log.warning("ignoring unreadable showcase override", extra={"persona": persona_id})
        return overrides

    async def _current(self) -> tuple[dict[str, Override], Catalog]:
        cached = self._cached
        if cached and self._clock() - cached[0] < self._cache_s:
            return cached[1], cached[2]
        if cached and self._lock.locked():
            return cached[1], cached[2]  # another request is reading it: serve this copy
        async with self._lock:
            if self._cached is not cached and self._cached is not None:
                return self._cached[1], self._cached[2]
            try:
                current = await self._read()
            except REDIS_ERRORS as exc:
                log.warning("showcase override unreadable", extra={"error": type(exc).__name__})
                if self.on_error:
                    self.on_error()
                # Serve the last copy (or the files' defaults) rather than fail the
                # catalogue, and keep serving it for cache_s before trying Redis again.
                current = cached[1] if cached else {}
            self._cached = (self._clock(), current, apply(self.base, current))
            return self._cached[1], self._cached[2]

    async def overrides(self) -> dict[str, Override]:
        return (await self._current())[0]

    async def catalog(self) -> Catalog:
        """The catalogue as sales want it shown now."""
        return (await self._current())[1]

    def invalidate(self) -> None:
        self._cached = None

    async def rows(self) -> list[ShowcaseRow]:
        self.invalidate()
        overrides = await self.overrides()
        catalog = apply(self.base, overrides)
        rows = [
            ShowcaseRow(
                id=p.id,
                display_name=p.display_name,
                language=p.language,
                enabled=p.enabled,
                featured=p.featured,
                order=p.order,
                overridden=sorted(overrides[p.id].fields()) if p.id in overrides else [],
            )
            for p in catalog
        ]
        return sorted(rows, key=lambda r: (not r.enabled, r.order, r.id))

    async def set(
        self,
        persona_id: str,
        *,
        enabled: bool | None = None,
        featured: bool | None = None,
        order: int | None = None,
    ) -> ShowcaseRow:
        persona = self.base.get(persona_id)
        if persona is None:
            raise ShowcaseError(f"there is no persona called {persona_id!r}")
        try:
            change = Override(enabled=enabled, featured=featured, order=order)
        except ValidationError as exc:
            raise ShowcaseError(f"order must be between 0 and {ORDER_MAX}") from exc
        if not change.fields():
            raise ShowcaseError("nothing to change: give enabled, featured or order")
        self.invalidate()
        current = (await self._read()).get(persona_id, Override())
        merged = {**current.fields(), **change.fields()}
        # Fields equal to the file's value are not an override: drop them.
        defaults = {
            "enabled": persona.enabled,
            "featured": persona.featured,
            "order": persona.order,
        }
        kept = {k: v for k, v in merged.items() if defaults[k] != v}
        async with self._redis.pipeline(transaction=True) as pipe:
            if kept:
                pipe.hset(keys.showcase(), persona_id, json.dumps(kept, sort_keys=True))
            else:
                pipe.hdel(keys.showcase(), persona_id)
            pipe.expire(keys.showcase(), self._ttl_s)
            await pipe.execute()
        return next(r for r in await self.rows() if r.id == persona_id)

    async def reset(self, persona_id: str | None = None) -> list[str]:
        """Back to the files' values for one persona (or all); returns the ids reset."""
        if persona_id is not None and self.base.get(persona_id) is None:
            raise ShowcaseError(f"there is no persona called {persona_id!r}")
        self.invalidate()
        current = await self._read()
        if persona_id is None:
            await self._redis.delete(keys.showcase())
            return sorted(current)
        if persona_id not in current:
            return []
        await self._redis.hdel(keys.showcase(), persona_id)
        return [persona_id]
