"""The ops JSON API under /ops/*: the CLI's commands over HTTP, behind the ops token;
/metrics behind its own read-only token. Failed sign-ins are limited (ops/signin.py) and
every action is in the audit log (ops/audit_log.py) under the credential's name.

IP addresses travel in POST bodies (lookup, erase), never in a URL, so they cannot end up
in a proxy's access log; so do emails (/ops/requests/*). /ops/requests/* also accept the
sales credential (SALES_TOKEN), which opens nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from ops import commands, sales_requests
from ops.audit_log import API, OPS, SALES, Actor
from ops.auth import read_body
from ops.privacy import SecretMismatch
from ops.runtime import OpsRuntime
from ops.signin import authenticate, authenticate_any
from redisdb.connection import REDIS_ERRORS
from server.errors import NO_STORE, ApiError


async def read_json(request: Request, max_bytes: int) -> dict[str, Any]:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise ApiError(415, "unsupported_media_type", "Send a JSON body (application/json).")
    body = await read_body(request, max_bytes)
    try:
        data = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(422, "invalid_json", "The body is not valid JSON.") from exc
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_request", "The body must be a JSON object.")
    return data


def _field(body: dict[str, Any], name: str, kind: type, required: bool = True) -> Any:
    value = body.get(name)
    if value is None and not required:
        return None
    # bool is an int in Python: refuse true/false where a number is meant.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ApiError(422, "invalid_request", f"{name} must be a {kind.__name__}.")
    return value


def _integer(value: str, name: str) -> int:
    # Query parameters are parsed here, not by the framework, so a bad one gets the same
    # {"error", "message"} answer as every other ops error.
    if not value.isdigit() or len(value) > 6:
        raise ApiError(422, "invalid_request", f"{name} must be a whole number.")
    return int(value)


# Errors that are not plain bad input: (status, code).
REFUSALS: tuple[tuple[type[Exception], int, str], ...] = (
    (SecretMismatch, 409, "secret_mismatch"),
    (sales_requests.UnknownRequest, 404, "unknown_request"),
    (sales_requests.RequestRestricted, 409, "restricted"),
    (sales_requests.VisitorsNotAllowed, 403, "forbidden"),
)


class Runner:
    """Runs an ops action and answers its JSON, or the error it raised in the API's shape."""

    def __init__(self, runtime: OpsRuntime) -> None:
        self.runtime = runtime

    async def __call__(
        self, action: Callable[[], Awaitable[dict[str, object]]], status: int = 200
    ) -> JSONResponse:
        try:
            result = await action()
        except commands.INPUT_ERRORS as exc:
            for kind, code_status, code in REFUSALS:
                if isinstance(exc, kind):
                    raise ApiError(code_status, code, str(exc)) from exc
            raise ApiError(422, "invalid_request", str(exc)) from exc
        except REDIS_ERRORS as exc:
            self.runtime.on_redis_error("ops")
            raise ApiError(
                503, "unavailable", "Redis is unreachable; nothing was changed.",
                {"Retry-After": "5"},
            ) from exc  # fmt: skip
        return JSONResponse(result, status_code=status, headers=NO_STORE)


def build_api(runtime: OpsRuntime) -> APIRouter:
    ctx = runtime.ctx
    max_body = ctx.policies.limits.http.max_body_bytes

    async def authorised(request: Request) -> None:
        await authenticate(request, runtime.signin, ctx.settings.ops_token, "OPS_TOKEN", "api")

    router = APIRouter(prefix="/ops", dependencies=[Depends(authorised)])
    run = Runner(runtime)

    @router.get("/sessions")
    async def sessions(
        since: str = "24h",
        persona: str | None = None,
        status: str | None = None,
        reason: str | None = None,
        visitor: str | None = None,
        limit: str = "50",
    ) -> JSONResponse:
        n = _integer(limit, "limit")
        return await run(
            lambda: commands.sessions(
                ctx, since=since, persona=persona, status=status, reason=reason,
                visitor=visitor, limit=n,
            )
        )  # fmt: skip

    @router.get("/stats")
    async def stats(by: str = "hour", count: str = "24") -> JSONResponse:
        n = _integer(count, "count")
        return await run(lambda: commands.stats(ctx, by=by, count=n))

    @router.get("/top")
    async def top(window: str = "24h", by: str = "sessions", limit: str = "20") -> JSONResponse:
        n = _integer(limit, "limit")
        return await run(lambda: commands.top(ctx, window=window, by=by, limit=n))

    @router.get("/blocks")
    async def blocks() -> JSONResponse:
        return await run(lambda: commands.list_blocks(ctx))

    @router.post("/blocks")
    async def block(request: Request) -> JSONResponse:
        body = await read_json(request, max_body)
        visitor = _field(body, "visitor", str)
        reason = _field(body, "reason", str)
        duration = _field(body, "for", str, required=False)
        return await run(
            lambda: commands.block(
                ctx, visitor=visitor, duration=duration, reason=reason, actor=API
            ),
            201,
        )

    @router.delete("/blocks/{visitor}")
    async def unblock(visitor: str) -> JSONResponse:
        return await run(lambda: commands.unblock(ctx, visitor=visitor, actor=API))

    @router.post("/lookup")
    async def lookup(request: Request) -> JSONResponse:
        ip = _field(await read_json(request, max_body), "ip", str)
        return await run(lambda: commands.lookup(ctx, ip=ip, actor=API))

    @router.post("/erase")
    async def erase(request: Request) -> JSONResponse:
        ip = _field(await read_json(request, max_body), "ip", str)
        return await run(lambda: commands.erase(ctx, ip=ip, actor=API))

    @router.get("/audit")
    async def audit() -> JSONResponse:
        return await run(lambda: commands.audit(ctx))

    @router.get("/audit-log")
    async def audit_log(
        since: str = "7d", action: str | None = None, limit: str = "100"
    ) -> JSONResponse:
        n = _integer(limit, "limit")
        return await run(lambda: commands.audit_entries(ctx, since=since, action=action, limit=n))

    @router.get("/showcase")
    async def showcase() -> JSONResponse:
        return await run(lambda: commands.showcase_list(ctx))

    @router.patch("/showcase/{persona}")
    async def showcase_set(persona: str, request: Request) -> JSONResponse:
        body = await read_json(request, max_body)
        unknown = set(body) - {"enabled", "featured", "order"}
        if unknown:
            raise ApiError(
                422, "invalid_request", f"unknown field(s): {', '.join(sorted(unknown))}"
            )
        enabled = _field(body, "enabled", bool, required=False)
        featured = _field(body, "featured", bool, required=False)
        order = _field(body, "order", int, required=False)
        return await run(
            lambda: commands.showcase_set(
                ctx, persona=persona, enabled=enabled, featured=featured, order=order, actor=API
            )
        )

    @router.delete("/showcase/{persona}")
    async def showcase_reset(persona: str) -> JSONResponse:
        return await run(lambda: commands.showcase_reset(ctx, persona=persona, actor=API))

    @router.delete("/showcase")
    async def showcase_reset_all() -> JSONResponse:
        return await run(lambda: commands.showcase_reset(ctx, actor=API))

    return router


def _only(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(body) - allowed
    if unknown:
        raise ApiError(422, "invalid_request", f"unknown field(s): {', '.join(sorted(unknown))}")


def build_requests_api(runtime: OpsRuntime) -> APIRouter:
    """/ops/requests: sales requests, for OPS_TOKEN and SALES_TOKEN alike, except what
    shows visitors (an export's demo sessions): OPS_TOKEN only. Emails go in POST bodies."""
    ctx = runtime.ctx
    settings = ctx.settings
    # A rectified message is as long as the form allows.
    max_body = ctx.request_rules.limits.max_body_bytes
    run = Runner(runtime)
    router = APIRouter(prefix="/ops/requests")

    async def actor(request: Request) -> Actor:
        accepted = {OPS: settings.ops_token, SALES: settings.sales_token}
        return Actor(await authenticate_any(request, runtime.signin, accepted, "api"), "api")

    async def target(request: Request, *extra: str) -> tuple[dict[str, Any], dict[str, Any]]:
        body = await read_json(request, max_body)
        _only(body, {"reference", "email", *extra})
        named = {
            "reference": _field(body, "reference", str, required=False),
            "email": _field(body, "email", str, required=False),
        }
        return body, named

    @router.get("")
    async def list_requests(
        request: Request, since: str = "30d", status: str | None = None, limit: str = "50"
    ) -> JSONResponse:
        who = await actor(request)
        n = _integer(limit, "limit")
        return await run(
            lambda: sales_requests.list_requests(
                ctx, since=since, status=status, limit=n, actor=who
            )
        )

    @router.get("/{reference}")
    async def show_one(reference: str, request: Request) -> JSONResponse:
        who = await actor(request)
        return await run(lambda: sales_requests.show(ctx, reference=reference, actor=who))

    def by_target(action: Callable[..., Awaitable[dict[str, object]]]) -> Any:
        """POST {"reference"|"email"}: the action on that request or on that email's."""

        async def handler(request: Request) -> JSONResponse:
            who = await actor(request)
            _, named = await target(request)
            return await run(lambda: action(ctx, **named, actor=who))

        return handler

    for name, action in (
        ("show", sales_requests.show),
        ("contacted", sales_requests.contacted),
        ("erase", sales_requests.erase),
    ):
        router.add_api_route(f"/{name}", by_target(action), methods=["POST"], name=name)

    @router.post("/rectify")
    async def rectify(request: Request) -> JSONResponse:
        who = await actor(request)
        body, named = await target(request, "fields")
        changes = _field(body, "fields", dict)
        return await run(lambda: sales_requests.rectify(ctx, **named, changes=changes, actor=who))

    @router.post("/restrict")
    async def restrict(request: Request) -> JSONResponse:
        who = await actor(request)
        body, named = await target(request, "lift")
        lift = bool(_field(body, "lift", bool, required=False))
        return await run(lambda: sales_requests.restrict(ctx, **named, lift=lift, actor=who))

    @router.post("/export")
    async def export(request: Request) -> JSONResponse:
        who = await actor(request)
        body = await read_json(request, max_body)
        _only(body, {"email", "ip"})
        email = _field(body, "email", str)
        ip = _field(body, "ip", str, required=False)
        return await run(
            lambda: sales_requests.export(
                ctx, email=email, ip=ip, actor=who, sees_visitors=who.credential == OPS
            )
        )

    return router


def build_metrics_route(runtime: OpsRuntime) -> APIRouter:
    from ops.metrics import CONTENT_TYPE

    router = APIRouter()

    @router.get("/metrics")
    async def metrics(request: Request) -> Response:
        settings = runtime.ctx.settings
        await authenticate(
            request, runtime.signin, settings.metrics_token, "METRICS_TOKEN", "metrics"
        )
        try:
            await runtime.metrics.refresh(runtime.ctx)
        except REDIS_ERRORS:
            # Still answer: the counters are ours; the Redis error is itself a metric.
            runtime.on_redis_error("metrics")
        return Response(runtime.metrics.render(), media_type=CONTENT_TYPE, headers=NO_STORE)

    return router
