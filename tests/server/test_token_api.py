"""The HTTP contract: both request forms, every token grant, the catalogue, bad input, CORS.

Plain request/response checks run the real app in-process (httpx.ASGITransport); bad input
and CORS go through a real `python token_server.py` on loopback, because chunked bodies,
header limits and the Host/Origin pair are decided by the real HTTP stack.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from agents_catalog import load_catalog
from agents_catalog.loader import DEFAULT_DIR as CATALOG_DIR
from policies import load_policies
from redisdb import keys
from tests.server.support import (
    AGENT_NAME,
    API_KEY,
    API_SECRET,
    asgi_client,
    decode_token,
    dump_redis,
    make_app,
    roomy_caps,
    session_record,
    settings_env,
)
from tests.support import ServerProcess, write_policies

SHOWCASE = ["agence-immo-fr", "realty-desk-en", "gestion-incidents-fr", "after-hours-en"]
PUBLIC_FIELDS = {
    "id", "display_name", "language", "pitch", "description", "tags", "featured", "order",
    "max_duration_s",
}  # fmt: skip
# Generous limits: these tests are about the contract, not about refusals.
ROOMY: dict[str, object] = roomy_caps({
    "visitor": {"concurrent_sessions": 100, "sessions_per_hour": 100, "sessions_per_day": 100,
                "minutes_per_day": 1000},
    "global": {"concurrent_sessions": 100, "minutes_per_day": 10000},
})  # fmt: skip
ALLOWED_ORIGIN = "https://www.onecallflow.test"
# Every value the client sends carries this marker; none may reach the token.
MARK = "zq7f3e"
LIVEKIT_FORM = {
    "room_name": f"room-{MARK}",
    "participant_identity": f"identity-{MARK}",
    "participant_name": f"name-{MARK}",
    "participant_metadata": json.dumps({"role": "admin", "marker": f"metadata-{MARK}"}),
    "participant_attributes": {f"attr-{MARK}": f"value-{MARK}"},
    "room_config": {
        "name": f"config-room-{MARK}",
        "max_participants": 50,
        "empty_timeout": 99999,
        "agents": [{"agent_name": "realty-desk-en", "metadata": f"dispatch-{MARK}"}],
    },
}


@pytest.fixture(scope="module")
def policies_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_policies(tmp_path_factory.mktemp("policies"), limits=ROOMY)


@pytest.fixture(scope="module")
def app(redis_url: str, policies_dir: Path) -> Any:
    return make_app(redis_url, policies_dir)


@pytest.fixture
async def client(app: Any, redis_client: redis.Redis) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(app) as c:
        yield c


def assert_token_contract(body: dict[str, Any], persona_id: str, duration_s: int) -> Any:
    """Every grant, the TTL, the room configuration and the dispatch metadata."""
    policies = load_policies()
    token = decode_token(body["participant_token"], API_KEY, API_SECRET)
    claims, raw = token.claims, token.raw
    video = claims.video
    assert video is not None
    assert video.room_join is True
    assert video.room == body["room_name"]
    assert video.can_subscribe is True
    assert video.can_publish is True
    assert video.can_publish_sources == ["microphone"]
    assert video.can_publish_data is True
    assert video.can_update_own_metadata is False
    for power in (
        "room_admin",
        "room_create",
        "room_list",
        "room_record",
        "recorder",
        "agent",
        "ingress_admin",
        "hidden",
        "can_manage_agent_session",
        "destination_room",
    ):
        assert not getattr(video, power, None), power  # fmt: skip
    # Whitelist on the raw claim too: any other grant set to true is a failure.
    granted = {k for k, v in raw["video"].items() if v is True}
    assert granted == {"roomJoin", "canSubscribe", "canPublish", "canPublishData"}
    assert set(raw) <= {"kind", "video", "roomConfig", "sub", "iss", "nbf", "exp"}, set(raw)
    assert raw["kind"] == "standard"
    assert not claims.metadata and not claims.attributes and not claims.name
    # Minutes, not hours: the join window.
    ttl = raw["exp"] - raw["nbf"]
    assert 60 <= ttl <= 15 * 60
    assert ttl == load_policies().limits.session.join_window_s
    assert abs(raw["nbf"] - time.time()) < 30

    config = claims.room_config
    assert config is not None
    room = policies.limits.room
    assert config.max_participants == room.max_participants
    assert config.empty_timeout == room.empty_timeout_s
    assert config.departure_timeout == room.departure_timeout_s
    assert len(config.agents) == 1
    dispatch = config.agents[0]
    assert dispatch.agent_name == AGENT_NAME
    metadata = json.loads(dispatch.metadata)
    persona = load_catalog().get(persona_id)
    assert persona is not None
    assert metadata["persona"] == persona_id
    assert metadata["session_id"] == body["session_id"]
    assert metadata["language"] == persona.language
    assert metadata["max_duration_s"] == duration_s == body["max_duration_s"]

    # Nothing the client sent, anywhere in the token.
    assert MARK not in json.dumps(raw)
    assert claims.identity
    return claims


def assert_response_fields(response: httpx.Response, persona_id: str, duration_s: int) -> None:
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {
        "server_url", "participant_token", "room_name", "session_id", "agent", "expires_at",
        "max_duration_s", "release_secret",
    }  # fmt: skip
    # The page's way to give the token back unused: random, url-safe, 192 bits.
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", body["release_secret"])
    assert body["server_url"] == "wss://livekit.test.invalid"
    persona = load_catalog().get(persona_id)
    assert persona is not None
    assert body["agent"] == persona.public_card(duration_s)
    assert "instructions" not in json.dumps(body["agent"])
    assert body["max_duration_s"] == duration_s
    expires = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00")).timestamp()
    join_window = load_policies().limits.session.join_window_s
    assert abs(expires - (time.time() + join_window)) < 30
    assert MARK not in response.text


async def test_our_form_mints_the_contracted_token(
    client: httpx.AsyncClient, redis_client: redis.Redis
) -> None:
    # after-hours-en asks for 240 s, shorter than the policy's 300 s.
    response = await client.post(
        "/api/token",
        json={"agent": "after-hours-en", "identity": f"me-{MARK}", "room": f"r-{MARK}"},
        headers={"User-Agent": f"agent-{MARK}"},
    )
    assert_response_fields(response, "after-hours-en", 240)
    body = response.json()
    claims = assert_token_contract(body, "after-hours-en", 240)
    record = session_record(redis_client, body["session_id"])
    assert record["persona"] == "after-hours-en"
    assert record["room"] == body["room_name"]
    assert record["status"] == "issued"
    # The identity is random: not the visitor's pseudonym, not stable across tokens.
    assert record["visitor"] not in claims.identity
    again = await client.post("/api/token", json={"agent": "after-hours-en"})
    other = decode_token(again.json()["participant_token"]).claims
    assert other.identity != claims.identity
    assert again.json()["room_name"] != body["room_name"]
    assert again.json()["session_id"] != body["session_id"]


async def test_livekit_form_mints_the_same_contract_ignoring_client_fields(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/api/token", json=LIVEKIT_FORM)
    assert_response_fields(response, "realty-desk-en", 300)
    body = response.json()
    claims = assert_token_contract(body, "realty-desk-en", 300)
    assert claims.identity != LIVEKIT_FORM["participant_identity"]
    assert body["room_name"] != LIVEKIT_FORM["room_name"]
    assert claims.room_config.max_participants != 50


async def test_catalogue_lists_enabled_personas_publicly_with_caching(
    client: httpx.AsyncClient, redis_client: redis.Redis
) -> None:
    response = await client.get("/api/agents")
    assert response.status_code == 200
    agents = response.json()["agents"]
    assert [a["id"] for a in agents] == SHOWCASE
    for card in agents:
        assert set(card) == PUBLIC_FIELDS
    assert {a["id"]: a["max_duration_s"] for a in agents}["after-hours-en"] == 240
    for persona in load_catalog():
        assert persona.instructions[:60] not in response.text
        assert persona.greeting not in response.text
    for secret_field in ("instructions", "demo_data", "greeting", "tools", "llm", "voice"):
        assert f'"{secret_field}"' not in response.text
    assert "max-age=" in response.headers["cache-control"]
    assert "no-store" not in response.headers["cache-control"]
    etag = response.headers["etag"]
    cached = await client.get("/api/agents", headers={"If-None-Match": etag})
    assert cached.status_code == 304
    assert cached.content == b""
    assert cached.headers["etag"] == etag
    stale = await client.get("/api/agents", headers={"If-None-Match": '"something-else"'})
    assert stale.status_code == 200
    assert redis_client.dbsize() == 0


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}


async def test_a_disabled_persona_is_hidden_and_refused(
    redis_url: str, policies_dir: Path, tmp_path: Path, redis_client: redis.Redis
) -> None:
    catalog = tmp_path / "personas"
    shutil.copytree(CATALOG_DIR, catalog)
    path = catalog / "realty-desk-en.yaml"
    text = path.read_text(encoding="utf-8")
    assert "\nenabled: true\n" in text
    path.write_text(text.replace("\nenabled: true\n", "\nenabled: false\n"), encoding="utf-8")
    app = make_app(redis_url, policies_dir, catalog_dir=catalog)
    async with asgi_client(app) as client:
        listed = (await client.get("/api/agents")).json()["agents"]
        assert [a["id"] for a in listed] == [i for i in SHOWCASE if i != "realty-desk-en"]
        for body in ({"agent": "realty-desk-en"}, LIVEKIT_FORM):
            refused = await client.post("/api/token", json=body)
            assert refused.status_code == 404
            assert refused.json()["error"] == "unknown_agent"
        assert (
            await client.post("/api/token", json={"agent": "agence-immo-fr"})
        ).status_code == 201
    # Only the enabled persona's admission reached Redis.
    records = list(redis_client.scan_iter(match=keys.session("*")))
    assert len(records) == 1
    assert redis_client.hget(records[0], "persona") == b"agence-immo-fr"


# --- bad input and origins, through the real server ----------------------------------------


@pytest.fixture(scope="module")
def server(redis_url: str, policies_dir: Path) -> Iterator[ServerProcess]:
    env = settings_env(redis_url, POLICIES_DIR=str(policies_dir), ALLOWED_ORIGINS=ALLOWED_ORIGIN)
    process = ServerProcess(env=env).start()
    yield process
    process.stop()


@pytest.fixture
def http(server: ServerProcess, redis_client: redis.Redis) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        # Start from a database that already holds an admission (counters, record, salt):
        # a bad request must leave every one of them exactly as it was.
        assert client.post("/api/token", json={"agent": "agence-immo-fr"}).status_code == 201
        yield client


def snapshot(client: redis.Redis) -> set[tuple[bytes, str, tuple[bytes, ...]]]:
    return {(k.name, k.kind, k.contents) for k in dump_redis(client)}


def chunks(total: int) -> Iterator[bytes]:
    yield b'{"agent": "agence-immo-fr", "pad": "'
    sent = 0
    while sent < total:
        yield b"x" * 1024
        sent += 1024
    yield b'"}'


JSON = {"Content-Type": "application/json"}
BAD_INPUT: list[tuple[str, dict[str, Any], int, str]] = [
    ("truncated JSON", {"content": b'{"agent": ', "headers": JSON}, 422, "invalid_json"),
    ("not UTF-8", {"content": b'{"agent": "\xff\xfe"}', "headers": JSON}, 422, "invalid_json"),
    ("agent is a number", {"json": {"agent": 5}}, 422, "invalid_request"),
    ("agent is empty", {"json": {"agent": ""}}, 422, "invalid_request"),
    ("agent is null", {"json": {"agent": None}}, 422, "invalid_request"),
    ("agent too long", {"json": {"agent": "a" * 65}}, 422, "invalid_request"),
    ("room_config is a list", {"json": {"room_config": []}}, 422, "invalid_request"),
    ("agents empty", {"json": {"room_config": {"agents": []}}}, 422, "invalid_request"),
    ("agents of strings", {"json": {"room_config": {"agents": ["agence-immo-fr"]}}}, 422,
     "invalid_request"),
    ("agent_name a number", {"json": {"room_config": {"agents": [{"agent_name": 5}]}}}, 422,
     "invalid_request"),
    ("body is an array", {"json": [{"agent": "agence-immo-fr"}]}, 422, "invalid_request"),
    ("body is a string", {"json": "agence-immo-fr"}, 422, "invalid_request"),
    ("no agent", {"json": {}}, 422, "invalid_request"),
    ("only LiveKit extras", {"json": {"room_name": "x", "participant_identity": "y"}}, 422,
     "invalid_request"),
    ("unknown persona", {"json": {"agent": "nope-persona"}}, 404, "unknown_agent"),
    ("unknown persona, LiveKit form",
     {"json": {"room_config": {"agents": [{"agent_name": "nope-persona"}]}}}, 404,
     "unknown_agent"),
    ("text/plain", {"content": b'{"agent": "agence-immo-fr"}',
                    "headers": {"Content-Type": "text/plain"}}, 415, "unsupported_media_type"),
    ("no content type", {"content": b'{"agent": "agence-immo-fr"}'}, 415,
     "unsupported_media_type"),
    ("form encoded", {"data": {"agent": "agence-immo-fr"}}, 415, "unsupported_media_type"),
    ("declared oversized body", {"json": {"agent": "agence-immo-fr", "pad": "x" * 5000}}, 413,
     "body_too_large"),
    ("chunked oversized body", {"content": chunks(64 * 1024), "headers": JSON}, 413,
     "body_too_large"),
    ("large headers", {"json": {"agent": "agence-immo-fr"},
                       "headers": {"X-Padding": "p" * 10_000}}, 431, "headers_too_large"),
    # Far past any sane size: uvicorn's httptools parser lets it through, our guard refuses.
    ("huge headers", {"json": {"agent": "agence-immo-fr"},
                      "headers": {f"X-Pad-{i}": "p" * 1000 for i in range(120)}}, 431,
     "headers_too_large"),
    ("disallowed origin", {"json": {"agent": "agence-immo-fr"},
                           "headers": {"Origin": "https://evil.example"}}, 403,
     "origin_not_allowed"),
    ("look-alike origin", {"json": {"agent": "agence-immo-fr"},
                           "headers": {"Origin": ALLOWED_ORIGIN + ".evil.example"}}, 403,
     "origin_not_allowed"),
    ("scheme-swapped origin", {"json": {"agent": "agence-immo-fr"},
                               "headers": {"Origin": "http://www.onecallflow.test"}}, 403,
     "origin_not_allowed"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("request_kwargs", "status", "code"),
    [case[1:] for case in BAD_INPUT],
    ids=[case[0] for case in BAD_INPUT],
)
def test_bad_input_is_refused_and_writes_nothing(
    http: httpx.Client,
    redis_client: redis.Redis,
    request_kwargs: dict[str, Any],
    status: int,
    code: str,
) -> None:
    before = snapshot(redis_client)
    assert before  # the admission made by the fixture
    response = http.post("/api/token", **request_kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert "participant_token" not in body
    assert response.headers["cache-control"] == "no-store"
    assert snapshot(redis_client) == before


def test_wrong_method_and_path_write_nothing(http: httpx.Client, redis_client: redis.Redis) -> None:
    before = snapshot(redis_client)
    wrong_method = http.get("/api/token")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"] == "method_not_allowed"
    missing = http.post("/api/tokens", json={"agent": "agence-immo-fr"})
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
    assert snapshot(redis_client) == before


def test_allowed_and_own_origins_get_cors_headers(
    http: httpx.Client, server: ServerProcess
) -> None:
    own = f"http://127.0.0.1:{server.port}"
    for origin in (ALLOWED_ORIGIN, own):
        response = http.post(
            "/api/token", json={"agent": "agence-immo-fr"}, headers={"Origin": origin}
        )
        assert response.status_code == 201, (origin, response.text)
        assert response.headers["access-control-allow-origin"] == origin
        assert "Origin" in response.headers["vary"]
        assert "Retry-After" in response.headers["access-control-expose-headers"]
    # No Origin (a server-side caller, curl): served, and no CORS header to echo.
    plain = http.post("/api/token", json={"agent": "agence-immo-fr"})
    assert plain.status_code == 201
    assert "access-control-allow-origin" not in plain.headers
    # Another port of our own host is another origin.
    other_port = http.post(
        "/api/token", json={"agent": "agence-immo-fr"}, headers={"Origin": "http://127.0.0.1:1"}
    )
    assert other_port.status_code == 403
    # The catalogue is public data: served to anyone, but only allowed origins get CORS.
    listed = http.get("/api/agents", headers={"Origin": "https://evil.example"})
    assert listed.status_code == 200
    assert "access-control-allow-origin" not in listed.headers


def test_preflight(http: httpx.Client, redis_client: redis.Redis) -> None:
    before = snapshot(redis_client)
    request_headers = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    allowed = http.options("/api/token", headers={"Origin": ALLOWED_ORIGIN, **request_headers})
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert "content-type" in allowed.headers["access-control-allow-headers"].lower()
    assert int(allowed.headers["access-control-max-age"]) > 0
    refused = http.options(
        "/api/token", headers={"Origin": "https://evil.example", **request_headers}
    )
    assert refused.status_code == 403
    assert refused.json()["error"] == "origin_not_allowed"
    assert "access-control-allow-origin" not in refused.headers
    assert snapshot(redis_client) == before


PUBLIC_ORIGIN = "https://demo.onecallflow.test"


@pytest.mark.parametrize("environment", ["production", "development"])
async def test_the_origin_is_checked_against_the_public_origin_not_the_host(
    redis_url: str, policies_dir: Path, redis_client: redis.Redis, environment: str
) -> None:
    app = make_app(
        redis_url,
        policies_dir,
        environment=environment,
        public_origin=PUBLIC_ORIGIN,
        allowed_origins=[ALLOWED_ORIGIN],
        livekit_api_secret=secrets.token_urlsafe(48),
        visitor_hash_secret=secrets.token_urlsafe(48),
    )
    body = {"agent": "agence-immo-fr"}
    async with asgi_client(app) as client:
        # Another site's page; its request names that site as Host too (a client writes both).
        forgeries = [
            ("https://evil.example", "evil.example"),
            ("http://demo.onecallflow.test", "demo.onecallflow.test"),
        ]
        for origin, host in forgeries:
            forged = await client.post(
                "/api/token", json=body, headers={"Origin": origin, "Host": host}
            )
            assert forged.status_code == 403, (origin, forged.text)
            assert forged.json()["error"] == "origin_not_allowed"
        assert redis_client.dbsize() == 0
        for origin in (PUBLIC_ORIGIN, ALLOWED_ORIGIN):
            ours = await client.post("/api/token", json=body, headers={"Origin": origin})
            assert ours.status_code == 201, (origin, ours.text)
            assert ours.headers["access-control-allow-origin"] == origin
