"""`GuardMiddleware`: what every request meets before any route (pure ASGI, so the plain
ASGI endpoints of the fast lane go through it too): the header-size limit, the Origin
check and CORS for /api/*, and a request log with no address."""

from __future__ import annotations

import logging
import time
from urllib.parse import urlsplit

from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import error_response
from server.give_back_endpoint import PATH as GIVE_BACK_PATH
from server.logs import now_ms
from server.requests_endpoint import PATH as SALES_REQUESTS_PATH
from server.settings import Settings
from server.token_endpoint import PATH as TOKEN_PATH

log = logging.getLogger("token_server")

# Paths a page of another origin may not even reach: they write to Redis for the visitor.
ORIGIN_CHECKED = frozenset({TOKEN_PATH, GIVE_BACK_PATH, SALES_REQUESTS_PATH})


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
