"""What the fuzzer (tests/server/test_fuzz.py, schemathesis against server/openapi.yaml)
found, each pinned by a test that failed before its fix. The real app in-process with a real Redis.

- An `Origin` that is not a URL Python can parse (`http://[`, `http://[::1`, `//[x]`) made
  every /api/* request answer 500 in development (no PUBLIC_ORIGIN): the Host comparison
  called urlsplit, which raises ValueError. Now such an origin is simply not ours (403 on
  POST /api/token and preflights; the catalogue is still served, without CORS).
- A method the path does not take got 405 without `Allow` (RFC 9110 requires it): the
  framework's 405 handler dropped the router's header. Now `Allow` lists the path's methods.
- OPTIONS /api/token without an `Origin` (not a preflight) got 405 "Use POST.", refusing a
  request the document describes; now 204 with `Allow: OPTIONS, POST`.

Found while documenting POST /api/requests for the fuzzer, by sending what it cannot
generate (it writes valid Unicode and shallow JSON, so these were out of its reach):

- JSON that Python's parser takes in but the server cannot hold answered 500: a string
  with a lone surrogate escape (`"\ud800"`: not a character, no UTF-8 for it) crashed the
  request form wherever it was stored or echoed (a field's value, a field's name); JSON
  nested deeper than Python's recursion limit (2,000 `[` fit in /api/token's 4 KiB) and an
  integer of more than 4,300 digits (in the form's 16 KiB) crashed the parser on both
  endpoints. `NaN` and `Infinity`, which are not JSON, were taken as numbers, and a body in
  UTF-16 or UTF-32 was read (Python's parser detects them) where the document says UTF-8.
  Now all are 422 `invalid_json`, and nothing is written.
- A form field named `_body` (the marker the form's parser used for "the body is not an
  object") turned the answer into "The request must be a JSON object.", without `fields`.
  Now it is an unknown field like any other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from redisdb import keys
from tests.sales.support import FORM
from tests.server.fuzz_support import fuzz_policies
from tests.server.support import asgi_client, dump_redis, make_app, settings_env
from tests.support import ServerProcess

UNPARSEABLE_ORIGINS = ["http://[", "http://[::1", "//[x]", "http://a]", "http://[1.2.3.4]"]


@pytest.fixture(scope="module")
def app(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    # Development, no PUBLIC_ORIGIN: where the Host header stands in for the page's origin.
    return make_app(redis_url, fuzz_policies(tmp_path_factory.mktemp("policies")))


@pytest.mark.parametrize("origin", UNPARSEABLE_ORIGINS)
async def test_an_origin_that_is_not_a_url_is_refused_not_a_crash(
    app: Any, redis_client: redis.Redis, origin: str
) -> None:
    async with asgi_client(app) as client:
        assert (
            await client.post("/api/token", json={"agent": "agence-immo-fr"})
        ).status_code == 201
        before = dump_redis(redis_client)
        token = await client.post(
            "/api/token", json={"agent": "agence-immo-fr"}, headers={"Origin": origin}
        )
        assert token.status_code == 403, token.text
        assert token.json()["error"] == "origin_not_allowed"
        preflight = await client.options("/api/token", headers={"Origin": origin})
        assert preflight.status_code == 403
        catalogue = await client.get("/api/agents", headers={"Origin": origin})
        assert catalogue.status_code == 200
        assert "access-control-allow-origin" not in catalogue.headers
        assert [(k.name, k.contents) for k in dump_redis(redis_client)] == [
            (k.name, k.contents) for k in before
        ]


@pytest.mark.parametrize(
    ("path", "method", "allowed"),
    [
        ("/", "DELETE", {"GET", "HEAD"}),
        ("/api/agents", "POST", {"GET"}),
        ("/healthz", "PUT", {"GET"}),
        ("/readyz", "PATCH", {"GET"}),
        ("/openapi.json", "TRACE", {"GET"}),
        ("/livekit/webhook", "GET", {"POST"}),
        ("/api/token", "GET", {"OPTIONS", "POST"}),
    ],
)
async def test_a_method_the_path_does_not_take_gets_405_with_allow(
    app: Any, path: str, method: str, allowed: set[str]
) -> None:
    async with asgi_client(app) as client:
        response = await client.request(method, path)
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
    assert {m.strip() for m in response.headers["allow"].split(",")} == allowed


async def test_options_without_origin_lists_the_methods(app: Any) -> None:
    async with asgi_client(app) as client:
        response = await client.options("/api/token")
    assert response.status_code == 204
    assert response.headers["allow"] == "OPTIONS, POST"
    assert response.content == b""
    assert "access-control-allow-origin" not in response.headers


def test_the_real_server_answers_an_unparseable_origin_with_403(
    redis_url: str, tmp_path: Path
) -> None:
    """Through uvicorn too: the 500 came out of the middleware, ahead of every route."""
    policies = fuzz_policies(tmp_path / "policies")
    server = ServerProcess(env=settings_env(redis_url, POLICIES_DIR=str(policies))).start()
    try:
        response = httpx.post(
            server.base_url + "/api/token",
            json={"agent": "agence-immo-fr"},
            headers={"Origin": "http://[::1"},
            timeout=10,
        )
        assert response.status_code == 403, response.text
        assert "Traceback" not in server.logs()
    finally:
        server.stop()


FORM_JSON = json.dumps(FORM)[1:-1]  # the form's fields, to put in a body written by hand
BODIES_THE_SERVER_CANNOT_HOLD: list[tuple[str, str, str | bytes]] = [
    ("/api/token", "deep nesting", "[" * 2000 + "]" * 2000),
    ("/api/token", "NaN", '{"agent": NaN}'),
    ("/api/token", "lone surrogate", '{"agent": "agence-immo-fr\\ud800"}'),
    ("/api/token", "UTF-16", '{"agent": "agence-immo-fr"}'.encode("utf-16")),
    ("/api/requests", "deep nesting", "{" + FORM_JSON + ', "x": ' + "[" * 5000 + "]" * 5000 + "}"),
    ("/api/requests", "huge integer", "{" + FORM_JSON + ', "x": 1' + "0" * 5000 + "}"),
    ("/api/requests", "Infinity", "{" + FORM_JSON + ', "website": Infinity}'),
    ("/api/requests", "lone surrogate in a value",
     json.dumps({**FORM, "name": "Jeanne \ud800 Dupont"})),
    ("/api/requests", "lone low surrogate in the message",
     json.dumps({**FORM, "message": "Bonjour \udfff"})),
    ("/api/requests", "lone surrogate in a field's name", json.dumps({**FORM, "\ud800": 1})),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "body"),
    [case[0::2] for case in BODIES_THE_SERVER_CANNOT_HOLD],
    ids=[f"{case[0]} {case[1]}" for case in BODIES_THE_SERVER_CANNOT_HOLD],
)
async def test_json_the_server_cannot_hold_is_invalid_json_not_a_crash(
    app: Any, redis_client: redis.Redis, path: str, body: str | bytes
) -> None:
    async with asgi_client(app) as client:
        assert (await client.post("/api/requests", json=FORM)).status_code == 201
        before = dump_redis(redis_client)
        content = body.encode() if isinstance(body, str) else body
        response = await client.post(
            path, content=content, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_json"
    assert [(k.name, k.contents) for k in dump_redis(redis_client)] == [
        (k.name, k.contents) for k in before
    ]


async def test_characters_beyond_the_first_plane_escaped_in_pairs_are_kept(
    app: Any, redis_client: redis.Redis
) -> None:
    """The surrogate check refuses lone halves only: a pair is one character (JSON's only
    way to escape one beyond U+FFFF, and how Python's json writes them)."""
    body = json.dumps({**FORM, "name": "Jeanne 😀 Dupont"})
    assert "\\ud83d\\ude00" in body
    async with asgi_client(app) as client:
        response = await client.post(
            "/api/requests", content=body.encode(), headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 201, response.text
    stored = redis_client.hget(keys.request(response.json()["reference"]), "name")
    assert stored == "Jeanne 😀 Dupont".encode()


async def test_a_field_named_like_the_parsers_marker_is_just_unknown(app: Any) -> None:
    async with asgi_client(app) as client:
        response = await client.post("/api/requests", json={**FORM, "_body": 1})
    assert response.status_code == 422, response.text
    assert response.json()["fields"] == {
        "_body": {"key": "unknown_field", "message": "Ce champ n'est pas attendu."}
    }
