"""The showcase override object the token server and the worker read: applied on top of
the catalogue files, cached briefly, and still served when Redis goes away."""

from __future__ import annotations

import time

import pytest
from redis.asyncio import Redis as AsyncRedis

from agents_catalog import load_catalog
from agents_catalog.showcase import Showcase, ShowcaseError
from redisdb import keys
from redisdb.connection import connect
from tests.support import RedisServer


async def test_override_applies_expires_and_survives_redis_loss(own_redis: RedisServer) -> None:
    catalog = load_catalog()
    redis: AsyncRedis = connect(own_redis.url, 0.3)
    clock = [1000.0]
    showcase = Showcase(redis, catalog, ttl_s=3600, cache_s=2, clock=lambda: clock[0])
    try:
        row = await showcase.set("gestion-incidents-fr", order=1, featured=True)
        assert row.overridden == ["featured", "order"]
        assert 3590 < await redis.ttl(keys.showcase()) <= 3600
        # Setting a field back to the file's value drops it from the override.
        row = await showcase.set("gestion-incidents-fr", featured=False)
        assert row.overridden == ["order"]
        shown = await showcase.catalog()
        assert shown.showcase()[0].id == "gestion-incidents-fr"
        assert catalog.get("gestion-incidents-fr").order == 30  # type: ignore[union-attr]

        # Another process changes it: seen once the cache is older than cache_s.
        other = Showcase(redis, catalog, ttl_s=3600, cache_s=2)
        await other.set("realty-desk-en", enabled=False)
        assert (await showcase.catalog()).get("realty-desk-en").enabled  # type: ignore[union-attr]
        clock[0] += 2.5
        assert not (await showcase.catalog()).get("realty-desk-en").enabled  # type: ignore[union-attr]

        own_redis.stop()
        clock[0] += 2.5
        stale = await showcase.catalog()
        assert not stale.get("realty-desk-en").enabled  # type: ignore[union-attr]
        # Within cache_s it does not wait on the dead Redis again.
        started = time.monotonic()
        await showcase.catalog()
        assert time.monotonic() - started < 0.05
        with pytest.raises(ShowcaseError):
            await showcase.set("no-such-persona", enabled=True)
    finally:
        await redis.aclose()


async def test_fresh_process_without_redis_serves_the_files(own_redis: RedisServer) -> None:
    own_redis.stop()
    redis: AsyncRedis = connect(own_redis.url, 0.3)
    try:
        shown = await Showcase(redis, load_catalog(), ttl_s=60, cache_s=2).catalog()
        assert [p.id for p in shown.showcase()] == [p.id for p in load_catalog().showcase()]
    finally:
        await redis.aclose()
