"""`POST /api/token/release`: the page gives back a token it could not use, so "Call again"
is admitted at once; only with the token's own secret, only while no worker claimed the
session, once. Every refused attempt leaves Redis exactly as it was.

A real token-server process (uvicorn, our HTTP limits), a real Redis, the shipped limits
(one call at a time per visitor: the lock-out a failed first try caused).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis
from redis.asyncio import Redis

from policies import load_policies
from policies.claim import Claims
from redisdb import keys
from redisdb.connection import connect
from tests.server.support import (
    dump_redis,
    redis_now,
    running_servers,
    session_record,
    settings_env,
)
from tests.support import RedisServer, ServerProcess

AGENT = {"agent": "agence-immo-fr"}  # 300 s reserved
RELEASE = "/api/token/release"
ALLOWED_ORIGIN = "https://www.onecallflow.test"


@pytest.fixture(scope="module")
def server(redis_url: str) -> Iterator[ServerProcess]:
    with running_servers([settings_env(redis_url, ALLOWED_ORIGINS=ALLOWED_ORIGIN)]) as started:
        yield started[0]


@pytest.fixture
def http(server: ServerProcess, redis_client: redis.Redis) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        yield client


@pytest.fixture
async def aredis(redis_url: str, redis_client: redis.Redis) -> AsyncIterator[Redis]:
    client = connect(redis_url, 5.0)
    yield client
    await client.aclose()


def snapshot(client: redis.Redis) -> set[tuple[bytes, str, tuple[bytes, ...]]]:
    return {(k.name, k.kind, k.contents) for k in dump_redis(client)}


def give_back(http: httpx.Client, grant: dict[str, Any], **changes: Any) -> httpx.Response:
    body = {"session_id": grant["session_id"], "release_secret": grant["release_secret"]}
    return http.post(RELEASE, json={**body, **changes})


def reserved(client: redis.Redis, visitor: str) -> tuple[int, int]:
    day = int(redis_now(client) // 86_400)
    mine = client.get(keys.visitor_bucket(keys.VISITOR_SECONDS, visitor, day))
    return int(mine or 0), int(client.get(keys.global_seconds(day)) or 0)


def holds(client: redis.Redis, record: dict[str, str], session_id: str) -> list[str]:
    nets = record.get("nets", "").split()
    names = [
        keys.visitor_active(record["visitor"]),
        keys.global_active(),
        keys.visitor_unjoined(record["visitor"]),
        keys.global_unjoined(),
        *(keys.network_active(n) for n in nets),
        *(keys.network_unjoined(n) for n in nets),
    ]
    return [n for n in names if client.zscore(n, session_id) is not None]  # fmt: skip


def test_a_token_given_back_lets_the_visitor_call_again_at_once(
    http: httpx.Client, redis_client: redis.Redis
) -> None:
    first = http.post("/api/token", json=AGENT)
    assert first.status_code == 201
    grant = first.json()
    record = session_record(redis_client, grant["session_id"])
    # The record keeps a keyed hash of the secret, never the secret.
    assert grant["release_secret"].encode() not in b"".join(
        k.blob() for k in dump_redis(redis_client)
    )
    assert len(record["release_hash"]) == 64
    locked = http.post("/api/token", json=AGENT)
    assert locked.status_code == 429 and locked.json()["reason"] == "visitor_concurrent"

    given = give_back(http, grant)
    assert given.status_code == 200, given.text
    assert given.headers["cache-control"] == "no-store"
    assert given.json() == {"session_id": grant["session_id"], "status": "given_back",
                            "refunded_s": 300}  # fmt: skip
    closed = session_record(redis_client, grant["session_id"])
    assert (closed["status"], closed["release_reason"]) == ("given_back", "given_back")
    assert holds(redis_client, record, grant["session_id"]) == []
    assert reserved(redis_client, record["visitor"]) == (0, 0)  # the minutes are back too

    again = http.post("/api/token", json=AGENT)
    assert again.status_code == 201, again.text


async def test_refused_give_backs_change_nothing(
    http: httpx.Client, redis_client: redis.Redis, aredis: Redis
) -> None:
    grant = http.post("/api/token", json=AGENT).json()
    # A second visitor (another loopback address) whose session the worker claimed: its
    # call is running.
    transport = httpx.HTTPTransport(local_address="127.0.0.9")
    with httpx.Client(base_url=http.base_url, timeout=10, transport=transport) as other:
        live = other.post("/api/token", json=AGENT).json()
    assert (await Claims(aredis, load_policies()).claim(live["session_id"], "AJ_live")).ours

    cases: list[tuple[str, dict[str, Any], int, str, str | None]] = [
        ("wrong secret", {"json": {"session_id": grant["session_id"],
                                   "release_secret": secrets.token_urlsafe(24)}},
         403, "release_refused", None),
        ("another session's secret", {"json": {"session_id": live["session_id"],
                                               "release_secret": grant["release_secret"]}},
         403, "release_refused", None),
        ("unknown session", {"json": {"session_id": "no-such-session",
                                      "release_secret": grant["release_secret"]}},
         403, "release_refused", None),
        ("the session id alone", {"json": {"session_id": grant["session_id"]}},
         422, "invalid_request", None),
        ("a secret that is a number", {"json": {"session_id": grant["session_id"],
                                                "release_secret": 12345}},
         422, "invalid_request", None),
        ("not an object", {"json": [grant["session_id"]]}, 422, "invalid_request", None),
        ("truncated JSON", {"content": b'{"session_id": ',
                            "headers": {"Content-Type": "application/json"}},
         422, "invalid_json", None),
        ("text/plain", {"content": b"{}", "headers": {"Content-Type": "text/plain"}},
         415, "unsupported_media_type", None),
        ("oversized body", {"json": {"session_id": grant["session_id"],
                                     "release_secret": grant["release_secret"], "pad": "x" * 5000}},
         413, "body_too_large", None),
        ("foreign origin", {"json": {"session_id": grant["session_id"],
                                     "release_secret": grant["release_secret"]},
                            "headers": {"Origin": "https://evil.example"}},
         403, "origin_not_allowed", None),
        ("a claimed session", {"json": {"session_id": live["session_id"],
                                        "release_secret": live["release_secret"]}},
         409, "not_releasable", "started"),
    ]  # fmt: skip
    for name, request, status, code, why in cases:
        before = snapshot(redis_client)
        response = http.post(RELEASE, **request)
        assert response.status_code == status, (name, response.text)
        body = response.json()
        assert body["error"] == code, name
        assert body.get("reason") == why, name
        assert isinstance(body["message"], str) and body["message"], name
        assert snapshot(redis_client) == before, name
    wrong_method = http.get(RELEASE)
    assert wrong_method.status_code == 405 and wrong_method.json()["error"] == "method_not_allowed"
    assert session_record(redis_client, live["session_id"])["status"] == "started"

    # Given back once; a replay (the page's unload beacon after its own give-back, or anyone
    # holding the request) is refused and changes nothing.
    assert give_back(http, grant).status_code == 200
    after = snapshot(redis_client)
    replay = give_back(http, grant)
    assert replay.status_code == 409, replay.text
    assert (replay.json()["error"], replay.json()["reason"]) == ("not_releasable", "given_back")
    assert snapshot(redis_client) == after


def test_redis_down_answers_503_unavailable(own_redis: RedisServer) -> None:
    """Fail closed like the token endpoint: a clear 503 with Retry-After, at once (the page
    does not wait on it for long, and the token frees itself when its window ends)."""
    with running_servers([settings_env(own_redis.url)]) as (process,):
        with httpx.Client(base_url=process.base_url, timeout=10) as client:
            grant = client.post("/api/token", json=AGENT).json()
            own_redis.stop()
            down = give_back(client, grant)
            assert down.status_code == 503, down.text
            assert down.json()["error"] == "unavailable"
            assert int(down.headers["retry-after"]) > 0
