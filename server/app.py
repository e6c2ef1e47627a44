"""The token server's app: persona catalogue, rate-limited LiveKit tokens, health, and the
routers of the page, the API document and ops.

`main()` (what `python token_server.py` runs) serves it on HOST:PORT with the HTTP limits of
server/http_limits.py; `uvicorn token_server:app` serves it without them (not for
production). See docs/token-server.md for the contracts; every refusal is JSON
`{"error": code, "message": text}`. Importing this module builds nothing: `create_app` does.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from redis.asyncio import Redis

from agents_catalog import CatalogError
from ops.install import install_ops
from policies import PolicyError
from redisdb.connection import REDIS_ERRORS, eviction_risk
from sales.mail import smtp_config
from sales.notifier import Notifier
from server import requests_endpoint
from server.api_document import document_router
from server.errors import NO_STORE, ApiError, error_response
from server.give_back_endpoint import PATH as GIVE_BACK_PATH
from server.give_back_endpoint import GiveBackEndpoint
from server.http_limits import limited_http_protocol
from server.logs import setup_logging
from server.middleware import GuardMiddleware
from server.services import Services, build_services
from server.settings import ConfigError, Settings
from server.token_endpoint import PATH as TOKEN_PATH
from server.token_endpoint import TokenEndpoint

log = logging.getLogger("token_server")

AGENTS_MAX_AGE_S = 30


async def say_if_redis_may_evict(redis: Redis) -> None:
    """At start: /readyz fails on this too, and whoever reads the log learns why."""
    try:
        problem = await eviction_risk(redis)
    except REDIS_ERRORS as exc:
        log.warning("redis unreachable at start", extra={"error": type(exc).__name__})
        return
    if problem:
        log.error(problem)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    services: Services = app.state.services
    ops = services.ops
    assert ops is not None, "create_app installs ops before the app can start"
    # Everything loaded so far (catalogue, policies, framework) lives as long as the
    # process: keep it out of the garbage collector's full scans on the hot path.
    gc.freeze()
    await say_if_redis_may_evict(services.redis)
    notifier = services.notifier
    async with contextlib.AsyncExitStack() as background:
        await background.enter_async_context(ops.background())  # never-joined sweeper
        if notifier is not None:
            await background.enter_async_context(notifier.running())
        yield
    await services.redis.aclose()
    if services.pipelined is not None:
        await services.pipelined.aclose()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    services = build_services(settings)
    redis = services.redis

    app = FastAPI(
        title="OneCallFlow voice demo",
        lifespan=lifespan,
        # No Swagger UI (third-party scripts) and no generated document: ours is written
        # by hand (server/api_document.py), since the framework never sees /api/token.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.services = services
    # Paths answered by plain ASGI apps ahead of the framework (see GuardMiddleware).
    app.state.fast_lane = {
        TOKEN_PATH: TokenEndpoint(services),
        requests_endpoint.PATH: requests_endpoint.RequestEndpoint(services),
        GIVE_BACK_PATH: GiveBackEndpoint(services),
    }

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(404)
    async def _not_found(_: Request, __: Exception) -> JSONResponse:
        return error_response(404, "not_found", "No such page.")

    @app.exception_handler(405)
    async def _bad_method(_: Request, exc: Exception) -> JSONResponse:
        # The router's `Allow` (the methods the path takes): RFC 9110 requires it on a 405.
        allow = getattr(exc, "headers", None) or {}
        return error_response(405, "method_not_allowed", "Method not allowed.", dict(allow))

    async def cards() -> list[dict[str, object]]:
        policies = services.policies
        # The catalogue as sales' showcase override has it now (ops/, no restart needed).
        catalog = await ops.catalog()
        return [
            p.public_card(policies.session_duration_s(p.max_duration_s)) for p in catalog.showcase()
        ]

    @app.get("/api/agents")
    async def list_agents(request: Request) -> Response:
        body = json.dumps({"agents": await cards()}, separators=(",", ":")).encode()
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        headers = {"Cache-Control": f"public, max-age={AGENTS_MAX_AGE_S}", "ETag": etag}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="application/json", headers=headers)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"}, headers=NO_STORE)

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        try:
            problem = await eviction_risk(redis)
        except REDIS_ERRORS:
            return error_response(503, "unavailable", "Redis is unreachable.")
        if problem:
            return error_response(503, "redis_may_evict", problem)
        return JSONResponse({"status": "ready"}, headers=NO_STORE)

    from web import web_router  # the demo page (web/): `/` and `/assets/*`

    app.include_router(web_router(settings))
    app.include_router(document_router([p.id for p in services.catalog]))
    # Ops API (/ops/*), page (/ops), /metrics, the LiveKit webhook (/livekit/webhook).
    ops = services.ops = install_ops(
        app,
        settings=settings,
        redis=redis,
        policies=services.policies,
        catalog=services.catalog,
        hasher=services.hasher,
        admission=services.admission,
        requests=services.requests,
    )
    mail = smtp_config(settings, services.request_rules.notify.timeout_s)
    if mail is not None:
        services.notifier = Notifier(
            services.requests, mail, services.request_rules.notify, ops.on_notification
        )
    app.add_middleware(
        GuardMiddleware,
        settings=settings,
        max_header_bytes=services.policies.limits.http.max_header_bytes,
        fast_lane=app.state.fast_lane,
    )
    return app


def configured_app(settings: Settings | None = None) -> FastAPI:
    """The app as it runs in production: our JSON logs with the privacy filter (in place of
    uvicorn's, whose access log prints client addresses), then the app."""
    settings = settings or Settings()
    setup_logging(settings.log_level)
    return create_app(settings)


def serve(application: FastAPI, settings: Settings) -> None:
    """Serve the app as production does: uvicorn with our HTTP limits (server/http_limits.py)."""
    import uvicorn

    services: Services = application.state.services
    limits = services.policies.limits.http
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        http=limited_http_protocol(limits),
        ws="none",  # no WebSocket here; uvicorn's WebSocket protocols log client addresses
        timeout_keep_alive=limits.keep_alive_timeout_s,
        access_log=False,
        log_config=None,
        server_header=False,
        proxy_headers=False,  # client address is ours to decide (TRUSTED_PROXIES)
    )


def main() -> None:
    try:
        settings = Settings()
        application = configured_app(settings)
    except (ConfigError, PolicyError, CatalogError, ValueError) as exc:
        print(f"token server: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    serve(application, settings)
