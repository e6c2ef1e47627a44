"""Shared fixtures: a real Redis (REDIS_URL if set, else our own redis-server)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from tests.fakes.server import VendorFakes, running_vendor_fakes
from tests.support import RedisServer


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The Redis the tests use. With REDIS_URL set, that database is flushed between tests:
    point it at a scratch database."""
    external = os.environ.get("REDIS_URL")
    if external:
        yield external
        return
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server this test may stop and restart (never the shared one)."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
async def vendor_fakes() -> AsyncIterator[VendorFakes]:
    """OpenAI and Deepgram fakes on a free loopback port (tests/fakes/); script them with
    `vendor_fakes.chat.script = Script(...)` and `vendor_fakes.listen.use_script(...)`."""
    async with running_vendor_fakes() as fakes:
        yield fakes
