"""Redis outage: the token endpoint fails closed, fast, and recovers by itself.

A real token-server process against a redis-server this test owns: stopped (connection
refused), then hung (SIGSTOP: connections accepted, nothing answered, the case where only
timeouts help), then back on the same port, without restarting the token server.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server.support import (
    burst,
    error_codes,
    roomy_caps,
    session_record,
    settings_env,
    status_counts,
)
from tests.support import RedisServer, ServerProcess, wait_until, write_policies

TOKEN = {"agent": "agence-immo-fr"}
# Not a timing test: the promise is "about a second"; this bound only catches a hang.
FAST_S = 3.0


@pytest.fixture
def server(own_redis: RedisServer, tmp_path: Path) -> Iterator[ServerProcess]:
    policies = write_policies(
        tmp_path,
        limits=roomy_caps({
            "visitor": {"concurrent_sessions": 500, "sessions_per_hour": 500,
                        "sessions_per_day": 500, "minutes_per_day": 5000},
            "global": {"concurrent_sessions": 500, "minutes_per_day": 100_000},
        }),
    )  # fmt: skip
    process = ServerProcess(env=settings_env(own_redis.url, POLICIES_DIR=str(policies))).start()
    yield process
    process.stop()


def timed_post(client: httpx.Client) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = client.post("/api/token", json=TOKEN)
    return response, time.monotonic() - started


def assert_unavailable(client: httpx.Client) -> None:
    for _ in range(5):
        response, elapsed = timed_post(client)
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "unavailable"
        assert "participant_token" not in response.json()
        assert int(response.headers["retry-after"]) > 0
        assert elapsed < FAST_S, elapsed
    started = time.monotonic()
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["error"] == "unavailable"
    assert time.monotonic() - started < FAST_S
    # What needs no Redis keeps working: liveness and the catalogue.
    assert client.get("/healthz").status_code == 200
    assert client.get("/api/agents").status_code == 200


def assert_recovered(client: httpx.Client, redis_server: RedisServer, url: str) -> None:
    wait_until(lambda: client.get("/readyz").status_code == 200, timeout=10)
    check = redis_server.client()
    try:
        for _ in range(3):
            response, _ = timed_post(client)
            assert response.status_code == 201, response.text
            # Never a token without its admission on record.
            assert session_record(check, response.json()["session_id"])
        # And under concurrency, through every pooled connection.
        responses = asyncio.run(burst([(url, {})] * 40, TOKEN))
        assert status_counts(responses) == {201: 40}
    finally:
        check.close()


def test_redis_stopped_then_restarted(server: ServerProcess, own_redis: RedisServer) -> None:
    url = server.base_url + "/api/token"
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        assert client.post("/api/token", json=TOKEN).status_code == 201
        # Warm more pooled connections, so stale ones exist when Redis comes back.
        assert status_counts(asyncio.run(burst([(url, {})] * 20, TOKEN))) == {201: 20}

        own_redis.stop()
        assert_unavailable(client)
        started = time.monotonic()
        during = asyncio.run(burst([(url, {})] * 40, TOKEN))
        assert error_codes(during) == {"unavailable": 40}
        assert time.monotonic() - started < FAST_S * 2

        own_redis.start()  # same port, empty (no persistence)
        assert_recovered(client, own_redis, url)


def test_redis_hung_then_resumed(server: ServerProcess, own_redis: RedisServer) -> None:
    url = server.base_url + "/api/token"
    assert own_redis.proc is not None
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        assert client.post("/api/token", json=TOKEN).status_code == 201
        own_redis.proc.send_signal(signal.SIGSTOP)
        try:
            assert_unavailable(client)
            # More simultaneous requests than pooled connections: the ones waiting for a
            # connection must give up within the same budget, not queue behind timeouts.
            started = time.monotonic()
            during = asyncio.run(burst([(url, {})] * 60, TOKEN))
            assert error_codes(during) == {"unavailable": 60}
            assert time.monotonic() - started < FAST_S * 2
        finally:
            own_redis.proc.send_signal(signal.SIGCONT)
        assert_recovered(client, own_redis, url)
