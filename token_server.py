"""The token server: persona catalogue, rate-limited LiveKit tokens, health.

`python token_server.py` serves it on HOST:PORT; `uvicorn token_server:app` works too.
See DESIGN (docs/DESIGN.md) for the contracts; every refusal is JSON
`{"error": code, "message": text}`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from agents_catalog import Catalog, CatalogError, Persona, load_catalog
from livekit_token import DispatchInfo, mint_token, new_session_id, room_name
from logs import now_ms, setup_logging
from policies import Policies, PolicyError, load_policies
from policies.admission import Admission, Admitted, Refused
from policies.client_address import client_address
from policies.pseudonyms import VisitorHasher, ua_family
from sessions.redis_conn import REDIS_ERRORS, connect
from settings import ConfigError, Settings

log = logging.getLogger("token_server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

NO_STORE = {"Cache-Control": "no-store"}
AGENTS_MAX_AGE_S = 30


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": code, "message": message},
        status_code=status,
        headers={**NO_STORE, **(headers or {})},
    )


@dataclass
class Services:
    settings: Settings
    policies: Policies
    catalog: Catalog
    hasher: VisitorHasher
    admission: Admission


# --- request guards ---------------------------------------------------------------------


def origin_allowed(origin: str, host: str | None, allowed: list[str]) -> bool:
    """The page's own origin (same host as the request) and ALLOWED_ORIGINS only."""
    if origin.rstrip("/") in allowed:
        return True
    return bool(host) and urlsplit(origin).netloc.lower() == (host or "").lower()


class GuardMiddleware:
    """Pure ASGI: header-size limit, CORS for /api/*, and a request log with no address."""

    def __init__(self, app: ASGIApp, settings: Settings, max_header_bytes: int) -> None:
        self.app = app
        self.settings = settings
        self.max_header_bytes = max_header_bytes

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
            if origin_allowed(origin, host, self.settings.allowed_origins):
                cors_origin = origin
            elif scope["method"] == "OPTIONS" or path == "/api/token":
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
            await self.app(scope, receive, send_wrapper)
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


async def read_json_body(request: Request, max_bytes: int) -> Any:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise ApiError(415, "unsupported_media_type", "Send the request body as application/json.")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
        raise ApiError(413, "body_too_large", f"The request body is limited to {max_bytes} bytes.")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise ApiError(
                413, "body_too_large", f"The request body is limited to {max_bytes} bytes."
            )
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(422, "invalid_json", "The request body is not valid JSON.") from exc


def requested_persona(body: Any) -> str:
    """Our form {"agent": id} or LiveKit's token-endpoint form
    (room_config.agents[0].agent_name). Nothing else the client sends is used."""
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_request", "The request body must be a JSON object.")
    if "agent" in body:
        agent = body["agent"]
    else:
        room_config = body.get("room_config")
        if room_config is None:
            raise ApiError(
                422,
                "invalid_request",
                'Name the demo agent: {"agent": "<id>"} or room_config.agents[0].agent_name.',
            )
        if not isinstance(room_config, dict):
            raise ApiError(422, "invalid_request", "room_config must be an object.")
        agents = room_config.get("agents")
        if not isinstance(agents, list) or not agents or not isinstance(agents[0], dict):
            raise ApiError(
                422, "invalid_request", "room_config.agents must be a non-empty list of objects."
            )
        agent = agents[0].get("agent_name")
    if not isinstance(agent, str) or not 1 <= len(agent) <= 64:
        raise ApiError(422, "invalid_request", "The agent id must be a string of 1 to 64 chars.")
    return agent


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


REFUSAL_TEXT = {
    "blocked": "Access to the demo has been suspended for this connection.",
    "visitor_concurrent": "You already have a demo call in progress.",
    "visitor_hourly": "You have reached the number of demo calls allowed per hour.",
    "visitor_daily": "You have reached the number of demo calls allowed today.",
    "visitor_minutes": "You have used today's demo minutes.",
    "global_concurrent": "All demo lines are busy right now.",
    "global_minutes": "The demo has reached its capacity for today.",
}


def refusal_error(refused: Refused) -> ApiError:
    headers = {"Retry-After": str(refused.retry_after_s)}
    reason = refused.reason
    text = REFUSAL_TEXT[reason.value]
    if reason == "blocked":
        return ApiError(403, "blocked", text)
    if reason.is_capacity:
        return ApiError(503, "capacity", text, headers)
    return ApiError(429, "rate_limited", text, headers)


# --- the app ------------------------------------------------------------------------------


def build_services(settings: Settings) -> Services:
    """Load and check everything start-up depends on; raise with a clear message if not."""
    settings.check_server_secrets()
    policies = load_policies(settings.policies_dir)
    catalog = load_catalog(settings.catalog_dir)
    redis = connect(settings.redis_url, settings.redis_timeout_s)
    return Services(
        settings=settings,
        policies=policies,
        catalog=catalog,
        hasher=VisitorHasher(redis, settings.visitor_hash_secret, policies.retention),
        admission=Admission(redis, policies),
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    services = build_services(settings)
    redis = services.hasher._redis

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await redis.aclose()

    app = FastAPI(
        title="OneCallFlow voice demo",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.services = services

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(404)
    async def _not_found(_: Request, __: Exception) -> JSONResponse:
        return error_response(404, "not_found", "No such page.")

    @app.exception_handler(405)
    async def _bad_method(_: Request, __: Exception) -> JSONResponse:
        return error_response(405, "method_not_allowed", "Method not allowed.")

    def cards() -> list[dict[str, object]]:
        policies = services.policies
        return [
            p.public_card(policies.session_duration_s(p.max_duration_s))
            for p in services.catalog.showcase()
        ]

    @app.get("/api/agents")
    async def list_agents(request: Request) -> Response:
        body = json.dumps({"agents": cards()}, separators=(",", ":")).encode()
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        headers = {"Cache-Control": f"public, max-age={AGENTS_MAX_AGE_S}", "ETag": etag}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="application/json", headers=headers)

    def lookup_persona(persona_id: str) -> Persona:
        persona = services.catalog.get(persona_id)
        if persona is None or not persona.enabled:
            raise ApiError(404, "unknown_agent", f"There is no demo agent called {persona_id!r}.")
        return persona

    @app.post("/api/token", status_code=201)
    async def issue_token(request: Request) -> JSONResponse:
        limits = services.policies.limits
        body = await read_json_body(request, limits.http.max_body_bytes)
        persona = lookup_persona(requested_persona(body))
        peer = request.client.host if request.client else None
        address = client_address(
            peer, request.headers.getlist("x-forwarded-for"), settings.trusted_networks
        )
        if address is None:
            raise ApiError(400, "no_client_address", "The client address could not be read.")
        user_agent = request.headers.get("user-agent", "")
        duration_s = services.policies.session_duration_s(persona.max_duration_s)
        session_id = new_session_id()
        room = room_name(session_id)
        try:
            salt = await services.hasher.current_salt()
            visitor = services.hasher.visitor(salt, address)
            family = ua_family(user_agent)
            decision = await services.admission.admit(
                visitor=visitor,
                session_id=session_id,
                persona=persona.id,
                duration_s=duration_s,
                record={
                    "session_id": session_id,
                    "room": room,
                    "persona": persona.id,
                    "language": persona.language,
                    "visitor": visitor,
                    "ua": services.hasher.user_agent(salt, user_agent),
                    "ua_family": family.label(),
                    "salt_period": str(salt.period),
                    "max_duration_s": str(duration_s),
                    "join_window_s": str(limits.session.join_window_s),
                    "status": "issued",
                },
            )
        except REDIS_ERRORS as exc:
            log.error("redis unavailable", extra={"error": type(exc).__name__})
            raise ApiError(
                503,
                "unavailable",
                "The demo is temporarily unavailable. Please try again shortly.",
                {"Retry-After": "5"},
            ) from exc
        if isinstance(decision, Refused):
            log.info(
                "token refused",
                extra={
                    "reason": decision.reason.value,
                    "visitor": visitor,
                    "persona": persona.id,
                    "refusals_today": decision.refusals_today,
                },
            )
            raise refusal_error(decision)
        assert isinstance(decision, Admitted)
        expires_at = decision.issued_at + limits.session.join_window_s
        token = mint_token(
            api_key=settings.livekit_api_key,
            api_secret=settings.livekit_api_secret,
            agent_name=settings.agent_name,
            room=room,
            dispatch=DispatchInfo(
                persona=persona.id,
                session_id=session_id,
                language=persona.language,
                max_duration_s=duration_s,
                issued_at=decision.issued_at,
            ),
            ttl_s=limits.session.join_window_s,
            room_limits=limits.room,
        )
        log.info(
            "token issued",
            extra={"session_id": session_id, "persona": persona.id, "visitor": visitor},
        )
        return JSONResponse(
            {
                "server_url": settings.livekit_url,
                "participant_token": token,
                "room_name": room,
                "session_id": session_id,
                "agent": persona.public_card(duration_s),
                "expires_at": iso(expires_at),
                "max_duration_s": duration_s,
            },
            status_code=201,
            headers=NO_STORE,
        )

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"}, headers=NO_STORE)

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        try:
            await redis.ping()
        except REDIS_ERRORS:
            return error_response(503, "unavailable", "Redis is unreachable.")
        return JSONResponse({"status": "ready"}, headers=NO_STORE)

    from web import web_router  # the demo page (web/): `/` and `/assets/*`

    app.include_router(web_router(settings))
    return _wrap(app, settings, services)


def _wrap(app: FastAPI, settings: Settings, services: Services) -> FastAPI:
    app.add_middleware(
        GuardMiddleware,
        settings=settings,
        max_header_bytes=services.policies.limits.http.max_header_bytes,
    )
    return app


def _startup_error(exc: Exception) -> None:
    print(f"token server: {exc}", file=sys.stderr)
    raise SystemExit(2) from exc


def main() -> None:
    import uvicorn

    try:
        settings = Settings()
        setup_logging(settings.log_level)
        application = create_app(settings)
    except (ConfigError, PolicyError, CatalogError, ValueError) as exc:
        _startup_error(exc)
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        access_log=False,
        log_config=None,
        server_header=False,
        proxy_headers=False,  # client address is ours to decide (TRUSTED_PROXIES)
    )


if __name__ == "__main__":
    main()
else:
    setup_logging(Settings().log_level)
    app = create_app()
