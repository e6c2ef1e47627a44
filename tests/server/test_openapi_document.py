"""The OpenAPI document (server/openapi.yaml, served at /openapi.json) is the truth about the public
HTTP surface: every public route is in it, and every status code it documents for an
operation is one the server really gives, with the documented content type, headers and
body.

Each documented answer has a scenario below that makes the real app give it (in-process,
real Redis; a stopped Redis or an evicting one where the answer is about Redis), and the
response is checked against the document by schemathesis' own checks. A documented answer
without a scenario fails, and so does a scenario for an answer the document lacks. The fuzzer
(tests/server/test_fuzz.py) covers the other direction: whatever it sends, the answer is documented.
"""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
import redis
import schemathesis
from fastapi import FastAPI
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from agents_catalog import load_catalog
from ops.blocks import block
from policies.admission import Refusal
from policies.claim import Claims
from policies.model import DAY_S
from redisdb import keys
from redisdb.connection import connect
from server.api_document import URL, load_document
from server.errors import ApiError
from server.give_back_endpoint import requested_release
from server.settings import Settings
from tests.ops.support import room_finished, signed_event
from tests.sales.support import FORM, OTHER, write_request_policies
from tests.server.fuzz_support import fuzz_policies
from tests.server.support import (
    asgi_client,
    away_from_bucket_edge,
    make_app,
    roomy_caps,
    session_record,
)
from tests.support import RedisServer, write_policies
from tests.web.support import ensure_bundle
from web.routes import web_router

PERSONA_IDS = [persona.id for persona in load_catalog()]
DOCUMENT = load_document(PERSONA_IDS)
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)
CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
ALLOWED_ORIGIN = "https://www.onecallflow.test"
# One sales request a day per visitor, two from everyone.
TIGHT_REQUESTS = {"per_visitor_per_day": 1, "global_per_day": 2}
# Paths served but deliberately left out of the document (see its info.description).
UNDOCUMENTED_PREFIXES = ("/ops", "/metrics", "/assets/")
# Served but not described: HEAD, which the framework adds beside GET on the page's route
# (its other GET routes do not take it: 405).
IMPLICIT = {"HEAD"}

Answer = tuple[str, str, int]  # method, path, status


def documented_answers() -> set[Answer]:
    return {
        (method.upper(), path, int(status))
        for path, operations in DOCUMENT["paths"].items()
        for method, operation in operations.items()
        for status in operation["responses"]
    }


# --- the environments the scenarios need -------------------------------------------------


@dataclass
class Apps:
    """The real app in the configurations the scenarios need, all in-process. Roomy: the
    fuzzer's limits (tests/server/fuzz_support.py), nobody refused by admission."""

    redis_url: str
    roomy_policies: Path
    tight_policies: Path
    scratch: Path  # where limited() writes its policies
    down_redis_url: str  # a port that refuses connections: Redis is down
    evicting_redis_url: str  # a Redis whose maxmemory-policy is allkeys-lru
    empty_dist: Path

    def roomy(self) -> Any:
        return make_app(self.redis_url, self.roomy_policies, allowed_origins=[ALLOWED_ORIGIN])

    def tight(self) -> Any:
        return make_app(self.redis_url, self.tight_policies)

    def limited(self, limits: dict[str, object]) -> Any:
        """The shipped limits with `limits` applied and the unjoined and network caps out of
        reach unless `limits` names them (roomy_caps)."""
        directory = write_request_policies(Path(tempfile.mkdtemp(dir=self.scratch)))
        return make_app(self.redis_url, write_policies(directory, limits=roomy_caps(limits)))

    def redis_down(self) -> Any:
        return make_app(self.down_redis_url, self.roomy_policies)

    def redis_evicting(self) -> Any:
        return make_app(self.evicting_redis_url, self.roomy_policies)

    def page_not_built(self) -> FastAPI:
        # The page's own router, as create_app mounts it, over a dist with no bundle.
        app = FastAPI()
        settings = Settings(_env_file=None, livekit_url="wss://livekit.test.invalid")  # type: ignore[call-arg]
        app.include_router(web_router(settings, self.empty_dist))
        return app


@pytest.fixture(scope="module")
def apps(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Apps]:
    ensure_bundle()
    # Bound, never listening: connections are refused, and no other process (other test
    # runs start Redis servers on free ports) can take the port while we hold it.
    down = socket.socket()
    down.bind(("127.0.0.1", 0))
    evicting = RedisServer().start()
    evicting.client().config_set("maxmemory-policy", "allkeys-lru")
    try:
        yield Apps(
            redis_url=redis_url,
            roomy_policies=fuzz_policies(tmp_path_factory.mktemp("roomy")),
            tight_policies=write_request_policies(
                tmp_path_factory.mktemp("tight"), limits=TIGHT_REQUESTS
            ),
            scratch=tmp_path_factory.mktemp("limited"),
            down_redis_url=f"redis://127.0.0.1:{down.getsockname()[1]}/0",
            evicting_redis_url=evicting.url,
            empty_dist=tmp_path_factory.mktemp("dist-not-built"),
        )
    finally:
        evicting.stop()
        down.close()


# --- scenarios: one per documented answer ---------------------------------------------------
# Each makes the real app give that answer, in each of its variants (error codes, request
# forms), and returns every response it got with that status: all are checked.

Responses = list[httpx.Response]
Scenario = Callable[[Apps], Awaitable[Responses]]
SCENARIOS: dict[Answer, Scenario] = {}
BIG_HEADERS = {f"X-Pad-{i}": "p" * 1000 for i in range(10)}  # > 8 KiB of headers
JSON = {"Content-Type": "application/json"}
OURS = {"agent": "agence-immo-fr"}
UNKNOWN_SESSION = "AAAAAAAAAAAAAAAA"


def scenario(method: str, path: str, status: int) -> Callable[[Scenario], Scenario]:
    def register(func: Scenario) -> Scenario:
        SCENARIOS[(method, path, status)] = func
        return func

    return register


def oversized_headers(method: str, path: str) -> Scenario:
    async def run(apps: Apps) -> Responses:
        async with asgi_client(apps.roomy()) as client:
            return [await client.request(method, path, json=OURS, headers=BIG_HEADERS)]

    return run


for _path, _operations in DOCUMENT["paths"].items():
    for _method in _operations:
        SCENARIOS[(_method.upper(), _path, 431)] = oversized_headers(_method.upper(), _path)


async def _get(app: Any, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async with asgi_client(app) as client:
        return await client.get(path, headers=headers)


def plain_get(path: str) -> Scenario:
    async def run(apps: Apps) -> Responses:
        return [await _get(apps.roomy(), path)]

    return run


for _path in ("/", "/api/agents", "/healthz", "/readyz"):
    SCENARIOS[("GET", _path, 200)] = plain_get(_path)


@scenario("GET", "/", 503)
async def page_not_built(apps: Apps) -> Responses:
    return [await _get(apps.page_not_built(), "/")]


@scenario("GET", "/api/agents", 304)
async def catalogue_not_modified(apps: Apps) -> Responses:
    app = apps.roomy()
    etag = (await _get(app, "/api/agents")).headers["etag"]
    return [await _get(app, "/api/agents", {"If-None-Match": etag})]


@scenario("GET", "/readyz", 503)
async def not_ready(apps: Apps) -> Responses:
    down = await _get(apps.redis_down(), "/readyz")
    assert down.json()["error"] == "unavailable"
    evicting = await _get(apps.redis_evicting(), "/readyz")
    assert evicting.json()["error"] == "redis_may_evict"
    return [down, evicting]


@scenario("GET", URL, 200)
async def the_document(apps: Apps) -> Responses:
    response = await _get(apps.roomy(), URL)
    assert response.json() == DOCUMENT
    return [response]


async def _post(
    app: Any, path: str, body: Any, peer: str = "127.0.0.1", headers: dict[str, str] | None = None
) -> httpx.Response:
    async with asgi_client(app, peer=peer) as client:
        return await client.post(path, json=body, headers=headers)


async def _token(app: Any, body: Any = OURS, **kwargs: Any) -> httpx.Response:
    return await _post(app, "/api/token", body, **kwargs)


async def _without_peer(app: Any, path: str, body: Any) -> httpx.Response:
    """From a listener that gives no peer address (scope["client"] is None)."""
    transport = httpx.ASGITransport(app=app, client=None)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://demo.test") as client:
        return await client.post(path, json=body)


@scenario("POST", "/api/token", 201)
async def admitted(apps: Apps) -> Responses:
    app = apps.roomy()
    livekit_form = {"room_config": {"agents": [{"agent_name": "realty-desk-en"}]}}
    return [
        await _token(app, OURS),
        await _token(app, livekit_form),
        await _token(app, OURS, headers={"Origin": ALLOWED_ORIGIN}),
    ]


@scenario("POST", "/api/token", 400)
async def no_client_address(apps: Apps) -> Responses:
    return [await _without_peer(apps.roomy(), "/api/token", OURS)]


@scenario("POST", "/api/token", 403)
async def blocked_and_foreign_origin(apps: Apps) -> Responses:
    app = apps.roomy()
    foreign = await _token(app, headers={"Origin": "https://evil.example"})
    assert foreign.json()["error"] == "origin_not_allowed"
    first = await _token(app, peer="198.51.100.7")
    record = session_record(redis.Redis.from_url(apps.redis_url), first.json()["session_id"])
    await block(app.state.services.ops.ctx, record["visitor"], 60, "document test")
    blocked = await _token(app, peer="198.51.100.7")
    assert blocked.json()["error"] == "blocked"
    return [foreign, blocked]


@scenario("POST", "/api/token", 404)
async def unknown_persona(apps: Apps) -> Responses:
    livekit_form = {"room_config": {"agents": [{"agent_name": "no-such-persona"}]}}
    return [await _token(apps.roomy(), {"agent": "no-such-persona"}),
            await _token(apps.roomy(), livekit_form)]  # fmt: skip


@scenario("POST", "/api/token", 413)
async def body_too_large(apps: Apps) -> Responses:
    return [await _token(apps.roomy(), {"agent": "agence-immo-fr", "pad": "x" * 5000})]


@scenario("POST", "/api/token", 415)
async def not_json(apps: Apps) -> Responses:
    async with asgi_client(apps.roomy()) as client:
        return [await client.post("/api/token", content=b'{"agent": "agence-immo-fr"}')]


@scenario("POST", "/api/token", 422)
async def malformed(apps: Apps) -> Responses:
    async with asgi_client(apps.roomy()) as client:
        bad_json = await client.post("/api/token", content=b'{"agent": ', headers=JSON)
        assert bad_json.json()["error"] == "invalid_json"
        bad_shape = await client.post("/api/token", json={"room_config": {"agents": []}})
        assert bad_shape.json()["error"] == "invalid_request"
        return [bad_json, bad_shape]


# Each admission refusal but `blocked`: the limits that give it (every other unjoined and
# network cap out of reach) and the addresses whose tokens are asked for in turn, all but
# the last admitted. One visitor; two visitors of one /24; two of different networks.
VISITOR = ("192.0.2.10", "192.0.2.10")
NETWORK = ("192.0.2.10", "192.0.2.11")
EVERYONE = ("192.0.2.10", "198.51.100.10")
Limits = dict[str, object]
PER_24 = {"ipv4": {24: {"concurrent_sessions": 5}}}
REFUSALS: dict[str, tuple[Limits, tuple[str, ...]]] = {
    "visitor_concurrent": ({"visitor": {"concurrent_sessions": 1}}, VISITOR),
    "visitor_unjoined": ({"visitor": {"concurrent_sessions": 2, "unjoined_tokens": 1}}, VISITOR),
    "visitor_hourly": ({"visitor": {"concurrent_sessions": 2, "sessions_per_hour": 1}}, VISITOR),
    # Also one an hour (an hour's limit may not exceed the day's): the hour is made to pass.
    "visitor_daily": (
        {"visitor": {"concurrent_sessions": 2, "sessions_per_hour": 1, "sessions_per_day": 1}},
        VISITOR,
    ),
    # 5 minutes a day; the persona reserves 300 s.
    "visitor_minutes": ({"visitor": {"concurrent_sessions": 2, "minutes_per_day": 5}}, VISITOR),
    "network_concurrent": ({"networks": {"ipv4": {24: {"concurrent_sessions": 1}}}}, NETWORK),
    "network_unjoined": ({"networks": {"ipv4": {24: {"unjoined_tokens": 1}}}}, NETWORK),
    "network_hourly": ({"networks": {"ipv4": {24: {"sessions_per_hour": 1}}}}, NETWORK),
    # A network's hour may exceed its day.
    "network_daily": (
        {"networks": {"ipv4": {24: {"sessions_per_hour": 2, "sessions_per_day": 1}}}},
        NETWORK,
    ),
    "global_concurrent": ({"global": {"concurrent_sessions": 1}}, EVERYONE),
    "global_unjoined": ({"global": {"unjoined_tokens": 1}}, EVERYONE),
    "global_minutes": ({"global": {"minutes_per_day": 5}}, EVERYONE),
}


def documented_reasons(status: int) -> list[str]:
    """The `reason`s the document gives POST /api/token's 429 or 503 `capacity`."""
    schema = DOCUMENT["paths"]["/api/token"]["post"]["responses"][str(status)]["content"]
    schema = schema["application/json"]["schema"]
    refusal = schema["oneOf"][0] if "oneOf" in schema else schema
    return list(refusal["properties"]["reason"]["enum"])


async def _refused_for(apps: Apps, reason: str) -> httpx.Response:
    limits, peers = REFUSALS[reason]
    client = redis.Redis.from_url(apps.redis_url)
    client.flushdb()  # nothing held by another reason's tokens
    away_from_bucket_edge(client, 3600, margin_s=10)
    app = apps.limited(limits)
    for peer in peers[:-1]:
        assert (await _token(app, peer=peer)).status_code == 201
    if reason == "visitor_daily":
        # The calls so far were in an earlier hour: the hour's count goes, the day's stays.
        client.delete(*client.scan_iter(keys.pattern(keys.VISITOR_HOUR)))
    refused = await _token(app, peer=peers[-1])
    assert refused.json().get("reason") == reason, refused.text
    return refused


@scenario("POST", "/api/token", 429)
async def visitor_or_network_limit(apps: Apps) -> Responses:
    return [await _refused_for(apps, reason) for reason in documented_reasons(429)]


@scenario("POST", "/api/token", 503)
async def full_or_redis_down(apps: Apps) -> Responses:
    down = await _token(apps.redis_down())
    assert down.json()["error"] == "unavailable"
    full = [await _refused_for(apps, reason) for reason in documented_reasons(503)]
    assert {response.json()["error"] for response in full} == {"capacity"}
    return [down, *full]


async def _options(app: Any, headers: dict[str, str], path: str = "/api/token") -> httpx.Response:
    async with asgi_client(app) as client:
        return await client.options(path, headers=headers)


@scenario("OPTIONS", "/api/token", 204)
async def preflight(apps: Apps) -> Responses:
    plain = await _options(apps.roomy(), {})
    assert plain.headers["allow"] == "OPTIONS, POST"
    asked = {"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "POST"}
    preflight = await _options(apps.roomy(), asked)
    assert preflight.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    return [plain, preflight]


@scenario("OPTIONS", "/api/token", 403)
async def preflight_from_elsewhere(apps: Apps) -> Responses:
    return [await _options(apps.roomy(), {"Origin": "https://evil.example"})]


RELEASE = "/api/token/release"


async def _issued(app: Any, peer: str = "127.0.0.1") -> dict[str, str]:
    """What the page keeps from a 201 to give the token back."""
    response = await _token(app, peer=peer)
    assert response.status_code == 201, response.text
    return {name: response.json()[name] for name in ("session_id", "release_secret")}


async def _give_back(app: Any, body: Any, **kwargs: Any) -> httpx.Response:
    return await _post(app, RELEASE, body, **kwargs)


@scenario("POST", RELEASE, 200)
async def given_back(apps: Apps) -> Responses:
    app = apps.roomy()
    plain = await _give_back(app, await _issued(app))
    from_the_page = await _give_back(app, await _issued(app), headers={"Origin": ALLOWED_ORIGIN})
    for response in (plain, from_the_page):
        assert response.json()["refunded_s"] == 300  # the persona's whole reservation
    return [plain, from_the_page]


@scenario("POST", RELEASE, 403)
async def release_refused(apps: Apps) -> Responses:
    app = apps.roomy()
    grant = await _issued(app)
    other = await _issued(app)
    wrong_secret = await _give_back(app, {**grant, "release_secret": "x" * 32})
    anothers_secret = await _give_back(app, {**grant, "release_secret": other["release_secret"]})
    unknown = await _give_back(app, {**grant, "session_id": UNKNOWN_SESSION})
    for refused in (wrong_secret, anothers_secret, unknown):
        assert refused.json()["error"] == "release_refused"
    foreign = await _give_back(app, grant, headers={"Origin": "https://evil.example"})
    assert foreign.json()["error"] == "origin_not_allowed"
    return [wrong_secret, anothers_secret, unknown, foreign]


@scenario("POST", RELEASE, 409)
async def not_releasable(apps: Apps) -> Responses:
    app = apps.roomy()
    claimed, repeated, finished = [await _issued(app) for _ in range(3)]
    aredis = connect(apps.redis_url, 5.0)
    try:
        claim = await Claims(aredis, app.state.services.policies).claim(
            claimed["session_id"], "AJ_document"
        )
        assert claim.ours
    finally:
        await aredis.aclose()
    assert (await _give_back(app, repeated)).status_code == 200
    body, token = signed_event(room_finished(finished["session_id"]))
    assert (await _webhook(app, body, token)).json()["outcome"] == "abandoned"
    answers = [await _give_back(app, grant) for grant in (claimed, repeated, finished)]
    reasons = [answer.json()["reason"] for answer in answers]
    assert reasons == ["started", "given_back", "abandoned"]
    return answers


@scenario("POST", RELEASE, 413)
async def release_too_large(apps: Apps) -> Responses:
    app = apps.roomy()
    return [await _give_back(app, {**await _issued(app), "pad": "x" * 5000})]


@scenario("POST", RELEASE, 415)
async def release_not_json(apps: Apps) -> Responses:
    async with asgi_client(apps.roomy()) as client:
        return [await client.post(RELEASE, data={"session_id": UNKNOWN_SESSION})]


@scenario("POST", RELEASE, 422)
async def release_malformed(apps: Apps) -> Responses:
    app = apps.roomy()
    grant = await _issued(app)
    async with asgi_client(app) as client:
        bad_json = await client.post(RELEASE, content=b'{"session_id": ', headers=JSON)
    assert bad_json.json()["error"] == "invalid_json"
    wrong = [
        await _give_back(app, [grant]),
        await _give_back(app, {"session_id": grant["session_id"]}),
        await _give_back(app, {**grant, "release_secret": "not/url+safe"}),
        await _give_back(app, {**grant, "session_id": "x" * 65}),
    ]
    assert {response.json()["error"] for response in wrong} == {"invalid_request"}
    return [bad_json, *wrong]


@scenario("POST", RELEASE, 503)
async def release_with_redis_down(apps: Apps) -> Responses:
    body = {"session_id": UNKNOWN_SESSION, "release_secret": "x" * 32}
    return [await _give_back(apps.redis_down(), body)]


@scenario("OPTIONS", RELEASE, 204)
async def release_preflight(apps: Apps) -> Responses:
    plain = await _options(apps.roomy(), {}, RELEASE)
    assert plain.headers["allow"] == "OPTIONS, POST"
    asked = {"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "POST"}
    preflight = await _options(apps.roomy(), asked, RELEASE)
    assert preflight.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    return [plain, preflight]


@scenario("OPTIONS", RELEASE, 403)
async def release_preflight_from_elsewhere(apps: Apps) -> Responses:
    return [await _options(apps.roomy(), {"Origin": "https://evil.example"}, RELEASE)]


async def _request(app: Any, body: Any = FORM, **kwargs: Any) -> httpx.Response:
    return await _post(app, "/api/requests", body, **kwargs)


@scenario("POST", "/api/requests", 201)
async def request_accepted(apps: Apps) -> Responses:
    app = apps.roomy()
    minimal = {k: v for k, v in OTHER.items() if k not in ("phone", "page_language")}
    return [
        await _request(app, {**FORM, "persona": "agence-immo-fr"}),
        await _request(app, minimal),
        await _request(app, OTHER, headers={"Origin": ALLOWED_ORIGIN}),
        # The honeypot: the same answer, whatever the rest holds (nothing stored).
        await _request(app, {"website": "https://cheap-pills.example", "name": 1}),
    ]


@scenario("POST", "/api/requests", 400)
async def request_without_client_address(apps: Apps) -> Responses:
    return [await _without_peer(apps.roomy(), "/api/requests", FORM)]


@scenario("POST", "/api/requests", 403)
async def request_from_elsewhere(apps: Apps) -> Responses:
    return [await _request(apps.roomy(), headers={"Origin": "https://evil.example"})]


@scenario("POST", "/api/requests", 413)
async def request_too_large(apps: Apps) -> Responses:
    return [await _request(apps.roomy(), {**FORM, "message": "x" * 17_000})]


@scenario("POST", "/api/requests", 415)
async def request_not_json(apps: Apps) -> Responses:
    async with asgi_client(apps.roomy()) as client:
        return [await client.post("/api/requests", data=FORM)]


@scenario("POST", "/api/requests", 422)
async def request_malformed(apps: Apps) -> Responses:
    app = apps.roomy()
    # Every kind of problem, with each bound the keys carry.
    wrong = {
        "name": "J",
        "email": "jeanne@",
        "phone": "12",
        "company": 7,
        "message": "x" * 2001,
        "language": "de",
        "persona": "nope-persona",
        "session_id": "../x",
        "consent": True,
    }
    fields = await _request(app, wrong)
    problems = fields.json()["fields"]
    assert {name: p["key"] for name, p in problems.items()} == {
        "name": "too_short", "email": "invalid_email", "phone": "invalid_phone",
        "company": "not_text", "message": "too_long", "language": "not_allowed",
        "persona": "unknown_persona", "session_id": "invalid_session", "consent": "unknown_field",
    }  # fmt: skip
    missing = await _request(app, {"page_language": "en"})
    assert {p["key"] for p in missing.json()["fields"].values()} == {"required"}
    not_an_object = await _request(app, [FORM])
    assert "fields" not in not_an_object.json()
    async with asgi_client(app) as client:
        bad_json = await client.post("/api/requests", content=b'{"name": ', headers=JSON)
    assert bad_json.json()["error"] == "invalid_json"
    return [fields, missing, not_an_object, bad_json]


@scenario("POST", "/api/requests", 429)
async def requests_over_the_days_limits(apps: Apps) -> Responses:
    away_from_bucket_edge(redis.Redis.from_url(apps.redis_url), DAY_S, margin_s=30)
    app = apps.tight()
    assert (await _request(app, peer="192.0.2.30")).status_code == 201
    visitor = await _request(app, OTHER, peer="192.0.2.30")
    assert visitor.json()["reason"] == "visitor_daily"
    assert (await _request(app, peer="192.0.2.31")).status_code == 201
    everyone = await _request(app, peer="192.0.2.32")
    assert everyone.json()["reason"] == "global_daily"
    return [visitor, everyone]


@scenario("POST", "/api/requests", 503)
async def request_with_redis_down(apps: Apps) -> Responses:
    return [await _request(apps.redis_down())]


@scenario("OPTIONS", "/api/requests", 204)
async def request_preflight(apps: Apps) -> Responses:
    async with asgi_client(apps.roomy()) as client:
        plain = await client.options("/api/requests")
        assert plain.headers["allow"] == "OPTIONS, POST"
        asked = {"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "POST"}
        preflight = await client.options("/api/requests", headers=asked)
    assert preflight.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    return [plain, preflight]


@scenario("OPTIONS", "/api/requests", 403)
async def request_preflight_from_elsewhere(apps: Apps) -> Responses:
    async with asgi_client(apps.roomy()) as client:
        return [await client.options("/api/requests", headers={"Origin": "https://evil.example"})]


async def _webhook(app: Any, body: bytes, authorization: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/webhook+json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    async with asgi_client(app) as client:
        return await client.post("/livekit/webhook", content=body, headers=headers)


@scenario("POST", "/livekit/webhook", 200)
async def webhook_event(apps: Apps) -> Responses:
    body, token = signed_event(room_finished(UNKNOWN_SESSION))
    response = await _webhook(apps.roomy(), body, token)
    assert response.json() == {"event": "room_finished", "outcome": "unknown"}
    return [response]


@scenario("POST", "/livekit/webhook", 400)
async def webhook_not_an_event(apps: Apps) -> Responses:
    unsigned_binary = await _webhook(apps.roomy(), b"\xff\xfe", None)
    # Correctly signed, but `createdAt` is no timestamp: not a WebhookEvent.
    body, token = signed_event({"event": "room_finished", "createdAt": "yesterday"})
    return [unsigned_binary, await _webhook(apps.roomy(), body, token)]


@scenario("POST", "/livekit/webhook", 401)
async def webhook_unsigned(apps: Apps) -> Responses:
    body, _ = signed_event(room_finished(UNKNOWN_SESSION))
    _, other_body_token = signed_event(room_finished("BBBBBBBBBBBBBBBB"))
    return [
        await _webhook(apps.roomy(), body, None),
        await _webhook(apps.roomy(), body, "not-a-jwt"),
        await _webhook(apps.roomy(), body, other_body_token),
    ]


@scenario("POST", "/livekit/webhook", 413)
async def webhook_too_large(apps: Apps) -> Responses:
    return [await _webhook(apps.roomy(), b"x" * 70_000, None)]


@scenario("POST", "/livekit/webhook", 503)
async def webhook_redis_down(apps: Apps) -> Responses:
    body, token = signed_event(room_finished(UNKNOWN_SESSION))
    return [await _webhook(apps.redis_down(), body, token)]


# --- the tests --------------------------------------------------------------------------------


def test_the_document_is_valid_openapi() -> None:
    SCHEMA.validate()
    assert DOCUMENT["openapi"].startswith("3.1")
    schemas = DOCUMENT["components"]["schemas"]
    assert schemas["CataloguePersonaId"]["enum"] == PERSONA_IDS
    examples = DOCUMENT["paths"]["/api/token"]["post"]["requestBody"]["content"]
    for example in examples["application/json"]["examples"].values():
        value = example["value"]
        persona = value.get("agent") or value["room_config"]["agents"][0]["agent_name"]
        assert persona in PERSONA_IDS


def test_every_admission_refusal_is_documented() -> None:
    documented = documented_reasons(429) + documented_reasons(503)
    assert sorted(documented) == sorted(REFUSALS)
    assert set(REFUSALS) | {"blocked"} == {refusal.value for refusal in Refusal}
    # ...and where the code answers it: a visitor's or a network's limit is 429, the whole
    # demo's 503 `capacity`.
    assert set(documented_reasons(503)) == {r.value for r in Refusal if r.is_capacity}


GOOD = "Ab0_-" * 3 + "x"  # 16 url-safe characters


@pytest.mark.parametrize(
    "body",
    [
        {"session_id": GOOD, "release_secret": GOOD * 2},
        {"session_id": "a", "release_secret": "b" * 64, "more": [1]},
        {"session_id": "a" * 65, "release_secret": GOOD},
        {"session_id": "", "release_secret": GOOD},
        {"session_id": GOOD + "\n", "release_secret": GOOD},
        {"session_id": GOOD, "release_secret": "abc=="},
        {"session_id": GOOD, "release_secret": "ééé"},
        {"session_id": GOOD, "release_secret": 123},
        {"session_id": GOOD, "release_secret": None},
        {"session_id": GOOD},
        {"release_secret": GOOD},
        [GOOD, GOOD],
        GOOD,
    ],
)
def test_the_give_back_schema_takes_exactly_what_the_server_takes(body: object) -> None:
    schema = {"$ref": "#/components/schemas/GiveBackRequest", "components": DOCUMENT["components"]}
    try:
        requested_release(body)
        taken = True
    except ApiError as refused:
        assert refused.status == 422
        taken = False
    assert jsonschema_rs.validator_for(schema).is_valid(body) == taken


def served_routes(routes: Iterable[Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(method, path) of every route, through included routers (FastAPI keeps those as
    nodes of their own, each with its router and prefix)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            inner_prefix = getattr(getattr(route, "include_context", None), "prefix", "")
            yield from served_routes(included.routes, prefix + inner_prefix)
        elif isinstance(getattr(route, "methods", None), set):
            yield from ((method, prefix + route.path) for method in route.methods)


def test_every_public_route_is_documented(apps: Apps) -> None:
    app = apps.roomy()
    served = {
        (method, path)
        for method, path in served_routes(app.routes)
        if method not in IMPLICIT and not path.startswith(UNDOCUMENTED_PREFIXES)
    }
    assert ("GET", "/ops") in set(served_routes(app.routes))  # the walk reaches routers
    # The plain ASGI apps served ahead of the framework (server/token_endpoint.py).
    served |= {(method, path) for path in app.state.fast_lane for method in ("POST", "OPTIONS")}
    documented = {(m, p) for m, p, _ in documented_answers()}
    assert served == documented


def test_every_documented_answer_has_a_scenario_and_no_more() -> None:
    assert set(SCENARIOS) == documented_answers()


@pytest.mark.parametrize(
    "answer", sorted(documented_answers()), ids=lambda a: f"{a[0]} {a[1]} {a[2]}"
)
async def test_the_server_gives_each_documented_answer(
    answer: Answer, apps: Apps, redis_client: redis.Redis
) -> None:
    method, path, status = answer
    scenario = SCENARIOS.get(answer)
    assert scenario is not None, f"no scenario shows the documented {answer}"
    operation = SCHEMA[path][method]
    for response in await scenario(apps):
        assert response.status_code == status, response.text
        # Status documented for the operation; content type, headers and body as documented.
        operation.Case().validate_response(response, checks=CHECKS)


ANY_METHOD = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


@pytest.mark.parametrize("path", sorted(DOCUMENT["paths"]))
async def test_a_method_a_path_does_not_take_gets_405_with_allow(apps: Apps, path: str) -> None:
    """The document's general rule (info.description): 405 `method_not_allowed` with `Allow`
    naming the methods described for the path (and HEAD where the framework serves it)."""
    app = apps.roomy()
    described = {method.upper() for method in DOCUMENT["paths"][path]}
    implicit = {m for m, p in served_routes(app.routes) if p == path and m in IMPLICIT}
    allowed = described | implicit
    error = DOCUMENT["components"]["schemas"]["Error"]
    async with asgi_client(app) as client:
        for method in sorted(set(ANY_METHOD) - allowed):
            response = await client.request(method, path)
            assert response.status_code == 405, (method, response.text)
            assert {m.strip() for m in response.headers["allow"].split(",")} == allowed
            assert response.headers["cache-control"] == "no-store"
            if method != "HEAD":  # a HEAD answer has no body
                assert response.json()["error"] == "method_not_allowed"
                assert set(response.json()) == set(error["required"])
