"""The token server: persona catalogue, rate-limited LiveKit tokens, health.

`python token_server.py` serves it on HOST:PORT with the HTTP limits of http_limits.py
(`uvicorn token_server:app` works too, without them: not for production).
See DESIGN (docs/DESIGN.md) for the contracts; every refusal is JSON
`{"error": code, "message": text}`.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from agents_catalog import Catalog, CatalogError, load_catalog
from api_document import document_router
from api_errors import NO_STORE, ApiError, error_response
from give_back_endpoint import PATH as GIVE_BACK_PATH
from give_back_endpoint import GiveBackEndpoint
from http_limits import limited_http_protocol
from logs import now_ms, setup_logging
from ops.install import install_ops
from ops.runtime import OpsRuntime
from policies import Policies, PolicyError, load_policies
from policies.admission import Admission
from policies.give_back import GiveBack
from policies.pseudonyms import VisitorHasher
from redisdb.connection import REDIS_ERRORS, connect, eviction_risk
from redisdb.pipelined import PipelinedRedis
from sales import endpoint as sales_endpoint
from sales.mail import smtp_config
from sales.notifier import Notifier
from sales.policy import RequestRules, load_request_rules
from sales.store import RequestStore
from settings import ConfigError, Settings
from token_endpoint import TokenEndpoint

log = logging.getLogger("token_server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

AGENTS_MAX_AGE_S = 30


@dataclass
class Services:
    settings: Settings
    policies: Policies
    catalog: Catalog
    hasher: VisitorHasher
    admission: Admission
    request_rules: RequestRules
    requests: RequestStore
    give_back: GiveBack
    pipelined: PipelinedRedis | None = None
    # Ops (ops/): showcase-aware catalogue, metrics, automatic defence; set by create_app.
    ops: OpsRuntime | None = None
    # The mail to sales (sales/notifier.py), when SMTP is configured; set by create_app.
    notifier: Notifier | None = None


# --- request guards ---------------------------------------------------------------------

# Paths a page of another origin may not even reach: they write to Redis for the visitor.
ORIGIN_CHECKED = frozenset({"/api/token", GIVE_BACK_PATH, sales_endpoint.PATH})


def origin_allowed(origin: str, host: str | None, settings: Settings) -> bool:
    """The page's origin (PUBLIC_ORIGIN) and ALLOWED_ORIGINS only. The Host header is the
    client's to write: it stands in for an unset PUBLIC_ORIGIN in development only."""
    origin = origin.rstrip("/").lower()
    if origin in settings.allowed_origins or origin == settings.public_origin:
        return True
    if settings.public_origin or settings.production:
        return False
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:  # not a URL at all ("http://[", found by the fuzzer): not our page
        return False
    return bool(host) and netloc == (host or "").lower()


class GuardMiddleware:
    """Pure ASGI: header-size limit, CORS for /api/*, and a request log with no address."""

    def __init__(
        self,
        app: ASGIApp,
        settings: Settings,
        max_header_bytes: int,
        fast_lane: dict[str, ASGIApp] | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.max_header_bytes = max_header_bytes
        # Paths served by plain ASGI apps, without the framework's routing (hot paths).
        self.fast_lane = fast_lane or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        if sum(len(k) + len(v) for k, v in headers) > self.max_header_bytes:
            response = error_response(431, "headers_too_large", "Request headers are too large.")
            await response(scope, receive, send)
            return
        origin = next((v.decode("latin-1") for k, v in headers if k == b"origin"), None)
        host = next((v.decode("latin-1") for k, v in headers if k == b"host"), None)
        path: str = scope["path"]
        cors_origin = None
        if origin and path.startswith("/api/"):
            if origin_allowed(origin, host, self.settings):
                cors_origin = origin
            elif scope["method"] == "OPTIONS" or path in ORIGIN_CHECKED:
                response = error_response(
                    403, "origin_not_allowed", "This site may not request demo tokens."
                )
                await response(scope, receive, send)
                return
        if cors_origin and scope["method"] == "OPTIONS":
            preflight = Response(
                status_code=204,
                headers={
                    "Access-Control-Allow-Origin": cors_origin,
                    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                    "Access-Control-Allow-Headers": "Content-Type",
                    "Access-Control-Max-Age": "600",
                    "Vary": "Origin",
                },
            )
            await preflight(scope, receive, send)
            return

        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if cors_origin:
                    message["headers"] = [
                        *message.get("headers", []),
                        (b"access-control-allow-origin", cors_origin.encode("latin-1")),
                        (b"access-control-expose-headers", b"Retry-After"),
                        (b"vary", b"Origin"),
                    ]
            await send(message)

        try:
            await self.fast_lane.get(path, self.app)(scope, receive, send_wrapper)
        finally:
            if log.isEnabledFor(logging.DEBUG) or status >= 500:
                log.log(
                    logging.ERROR if status >= 500 else logging.DEBUG,
                    "request",
                    extra={
                        "method": scope["method"],
                        "path": path,
                        "status": status,
                        "ms": now_ms(started),
                    },
                )


# --- the app ------------------------------------------------------------------------------


def build_services(settings: Settings) -> Services:
    """Load and check everything start-up depends on; raise with a clear message if not."""
    settings.check_server_secrets()
    policies = load_policies(settings.policies_dir)
    request_rules = load_request_rules(settings.policies_dir)
    # Half-configured mail would lose notifications silently: refuse to start instead.
    smtp_config(settings, request_rules.notify.timeout_s)
    catalog = load_catalog(settings.catalog_dir)
    redis = connect(settings.redis_url, settings.redis_timeout_s)
    pipelined = (
        PipelinedRedis(settings.redis_url, settings.redis_timeout_s)
        if PipelinedRedis.supports(settings.redis_url)
        else None
    )
    admission = Admission(redis, policies, pipelined)
    return Services(
        settings=settings,
        policies=policies,
        catalog=catalog,
        hasher=VisitorHasher(redis, settings.visitor_hash_secret, policies.retention),
        admission=admission,
        request_rules=request_rules,
        requests=RequestStore(
            redis, policies.retention, request_rules, settings.visitor_hash_secret
        ),
        give_back=GiveBack(redis, admission, settings.visitor_hash_secret),
        pipelined=pipelined,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    services = build_services(settings)
    redis = services.hasher.redis

    async def say_if_redis_may_evict() -> None:
        """At start: /readyz fails on this too, and whoever reads the log learns why."""
        try:
            problem = await eviction_risk(redis)
        except REDIS_ERRORS as exc:
            log.warning("redis unreachable at start", extra={"error": type(exc).__name__})
            return
        if problem:
            log.error(problem)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Everything loaded so far (catalogue, policies, framework) lives as long as the
        # process: keep it out of the garbage collector's full scans on the hot path.
        gc.freeze()
        await say_if_redis_may_evict()
        notifier = services.notifier
        async with contextlib.AsyncExitStack() as background:
            await background.enter_async_context(ops.background())  # never-joined sweeper
            if notifier is not None:
                await background.enter_async_context(notifier.running())
            yield
        await redis.aclose()
        if services.pipelined is not None:
            await services.pipelined.aclose()

    app = FastAPI(
        title="OneCallFlow voice demo",
        lifespan=lifespan,
        # No Swagger UI (third-party scripts) and no generated document: ours is written
        # by hand (api_document.py), since the framework never sees /api/token.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.services = services
    # Paths answered by plain ASGI apps ahead of the framework (see GuardMiddleware).
    app.state.fast_lane = {
        "/api/token": TokenEndpoint(services),
        sales_endpoint.PATH: sales_endpoint.RequestEndpoint(services),
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
    return _wrap(app, settings, services)


def _wrap(app: FastAPI, settings: Settings, services: Services) -> FastAPI:
    app.add_middleware(
        GuardMiddleware,
        settings=settings,
        max_header_bytes=services.policies.limits.http.max_header_bytes,
        fast_lane=app.state.fast_lane,
    )
    return app


def _startup_error(exc: Exception) -> None:
    print(f"token server: {exc}", file=sys.stderr)
    raise SystemExit(2) from exc


def serve(application: FastAPI, settings: Settings) -> None:
    """Serve the app as production does: uvicorn with our HTTP limits (http_limits.py)."""
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
        setup_logging(settings.log_level)
        application = create_app(settings)
    except (ConfigError, PolicyError, CatalogError, ValueError) as exc:
        _startup_error(exc)
    serve(application, settings)


if __name__ == "__main__":
    main()
else:
    setup_logging(Settings().log_level)
    app = create_app()
