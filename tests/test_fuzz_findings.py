"""What the fuzzer (tests/test_fuzz.py, schemathesis against openapi.yaml) found, each pinned
by a test that failed before its fix. The real app in-process with a real Redis.

- An `Origin` that is not a URL Python can parse (`http://[`, `http://[::1`, `//[x]`) made
  every /api/* request answer 500 in development (no PUBLIC_ORIGIN): the Host comparison
  called urlsplit, which raises ValueError. Now such an origin is simply not ours (403 on
  POST /api/token and preflights; the catalogue is still served, without CORS).
- A method the path does not take got 405 without `Allow` (RFC 9110 requires it): the
  framework's 405 handler dropped the router's header. Now `Allow` lists the path's methods.
- OPTIONS /api/token without an `Origin` (not a preflight) got 405 "Use POST.", refusing a
  request the document describes; now 204 with `Allow: OPTIONS, POST`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.fuzz_support import fuzz_policies
from tests.support import ServerProcess
from tests.token_support import asgi_client, dump_redis, make_app, settings_env

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
