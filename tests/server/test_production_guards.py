"""Production guards that need real processes or a real Redis (issue 11, item 11).

- /readyz fails, and the token server says why at start, when Redis may evict our keys;
- the worker's health server listens on loopback unless told otherwise;
- salt periods and the never-joined sweeper follow Redis' clock, not a skewed host clock.
(Settings-level guards are in tests/server/test_settings.py, the Origin check in
tests/server/test_token_api.py.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from redis.asyncio import Redis

from ops.context import build_context
from ops.reconcile import expire_unjoined
from policies import load_policies
from policies.admission import Admission, Admitted
from policies.pseudonyms import VisitorHasher
from redisdb import keys
from redisdb.connection import connect
from server.settings import Settings
from tests.server.support import settings_env
from tests.support import ROOT, RedisServer, ServerProcess, free_port, wait_until

POLICIES = load_policies()


# --- Redis that may evict ------------------------------------------------------------------


def test_readyz_fails_and_start_says_why_when_redis_may_evict(own_redis: RedisServer) -> None:
    admin = own_redis.client()
    admin.config_set("maxmemory-policy", "allkeys-lru")
    server = ServerProcess(env=settings_env(own_redis.url)).start()
    try:
        ready = httpx.get(server.base_url + "/readyz")
        assert ready.status_code == 503
        assert ready.json()["error"] == "redis_may_evict"
        assert "allkeys-lru" in ready.json()["message"]
        assert "noeviction" in ready.json()["message"]
        # Alive all the same (a restart would not fix Redis), and ready once Redis is safe.
        assert httpx.get(server.base_url + "/healthz").status_code == 200
        admin.config_set("maxmemory-policy", "noeviction")
        assert httpx.get(server.base_url + "/readyz").status_code == 200
    finally:
        server.stop()
        admin.close()
    logged = server.logs()
    assert "maxmemory-policy is allkeys-lru" in logged
    assert '"level": "error"' in logged


# --- the worker's health server ------------------------------------------------------------


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/net/{table}")
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


@pytest.fixture
def worker_env() -> Iterator[dict[str, str]]:
    nobody = free_port()  # no LiveKit there: the worker keeps trying, its health server runs
    yield {
        **os.environ,
        "ENVIRONMENT": "development",
        "LIVEKIT_URL": f"ws://127.0.0.1:{nobody}",
        "LIVEKIT_API_KEY": "APItestkey0000",
        "LIVEKIT_API_SECRET": "test-secret-0123456789abcdefghijklmnopqrstuvwxyz",
        "OPENAI_API_KEY": "sk-local-fake-key",
        "DEEPGRAM_API_KEY": "local-fake-deepgram-key",
        "AGENT_NUM_IDLE_PROCESSES": "0",
        "AGENT_HEALTH_PORT": str(free_port()),
    }


def health_bind(env: dict[str, str]) -> set[str]:
    """Start `python -m agent start`, see where its health server listens, stop it."""
    port = int(env["AGENT_HEALTH_PORT"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "start"], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        wait_until(lambda: bool(listening_addresses(port)) or proc.poll() is not None, 90)
        assert proc.poll() is None, "the worker exited"
        return listening_addresses(port)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


LOOPBACK_V4 = "0100007F"  # 127.0.0.1 as /proc/net/tcp writes it


def test_worker_health_server_listens_on_loopback_by_default(worker_env: dict[str, str]) -> None:
    assert health_bind(worker_env) == {LOOPBACK_V4}


def test_worker_health_server_host_is_configurable(worker_env: dict[str, str]) -> None:
    assert health_bind({**worker_env, "AGENT_HEALTH_HOST": "0.0.0.0"}) == {"00000000"}


# --- Redis' clock ----------------------------------------------------------------------------


@pytest.fixture
async def aredis(redis_url: str, redis_client: redis.Redis) -> AsyncIterator[Redis]:
    client = connect(redis_url, 2.0)
    yield client
    await client.aclose()


def skew_host_clock(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """This process's wall clock, `seconds` off (as on a host whose clock drifted)."""
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + seconds)


async def test_salt_periods_follow_redis_clock(
    aredis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    period_s = POLICIES.retention.salt_period_s
    pepper = "p" * 40
    right = await VisitorHasher(aredis, pepper, POLICIES.retention).current_salt()
    running = VisitorHasher(aredis, pepper, POLICIES.retention)
    assert await running.current_salt() == right

    # A process started on a host a whole period ahead, and one whose clock jumps ahead
    # while it runs: both hash under the period (and salt) every other process uses.
    skew_host_clock(monkeypatch, period_s)
    assert await VisitorHasher(aredis, pepper, POLICIES.retention).current_salt() == right
    assert await running.current_salt() == right
    assert await running.current_salt() == right
    skew_host_clock(monkeypatch, -period_s)
    assert await VisitorHasher(aredis, pepper, POLICIES.retention).current_salt() == right


async def test_never_joined_sweeper_follows_redis_clock(
    aredis: Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(_env_file=None, redis_url=redis_url)  # type: ignore[call-arg]
    ctx = build_context(settings, redis=aredis)
    session_id = "clock-skew-0001"
    decision = await Admission(aredis, POLICIES).admit(
        visitor="v" * 32, session_id=session_id, persona="agence-immo-fr", duration_s=300,
        record={"session_id": session_id, "visitor": "v" * 32, "persona": "agence-immo-fr",
                "status": "issued", "join_window_s": str(POLICIES.limits.session.join_window_s)},
    )  # fmt: skip
    assert isinstance(decision, Admitted)
    # Minted a moment ago by Redis' clock; an hour ago by a host clock an hour ahead.
    skew_host_clock(monkeypatch, 3600)
    assert await expire_unjoined(ctx) == []
    assert await aredis.zscore(keys.global_active(), session_id) is not None
    # Given a time past the join window (Redis' clock), it is closed as never joined.
    late = decision.issued_at + POLICIES.limits.session.join_window_s + 3600
    assert await expire_unjoined(ctx, now=late) == [session_id]
