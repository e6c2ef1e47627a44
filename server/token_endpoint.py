"""`POST /api/token`: admit a visitor and mint their LiveKit token.

A plain ASGI app rather than a FastAPI route: this is the public hot path that floods hit
first, and the framework's per-request machinery cost more than the admission itself
(bench/token_throughput.py). The contract is DESIGN's: our form `{"agent": id}` or LiveKit's
token-endpoint form; 201 with `server_url`, `participant_token`...; JSON errors.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from starlette.types import Receive, Scope, Send

from agents_catalog import Persona
from agents_catalog.dispatch import DispatchMetadata
from policies.admission import Refused
from policies.client_address import request_address
from policies.give_back import HASH_FIELD, new_release_secret
from policies.pseudonyms import Salt, known_ua_family, ua_family
from redisdb.connection import REDIS_ERRORS
from server.errors import ApiError, read_bounded
from server.livekit_token import mint_token, new_session_id, room_name
from server.services import Services
from sessions.store import SessionStore

log = logging.getLogger("token_server")

PATH = "/api/token"
OPTIONS_ANSWER = [(b"allow", b"OPTIONS, POST"), (b"cache-control", b"no-store")]

REFUSAL_TEXT = {
    "blocked": "Access to the demo has been suspended for this connection.",
    "visitor_concurrent": "You already have a demo call in progress.",
    "visitor_unjoined": "You already have a demo call waiting to connect.",
    "visitor_hourly": "You have reached the number of demo calls allowed per hour.",
    "visitor_daily": "You have reached the number of demo calls allowed today.",
    "visitor_minutes": "You have used today's demo minutes.",
    "network_concurrent": "Too many demo calls are in progress from your network.",
    "network_unjoined": "Too many demo calls are waiting to connect from your network.",
    "network_hourly": "Your network has reached the number of demo calls allowed per hour.",
    "network_daily": "Your network has reached the number of demo calls allowed today.",
    "global_concurrent": "All demo lines are busy right now.",
    "global_unjoined": "All demo lines are busy right now.",
    "global_minutes": "The demo has reached its capacity for today.",
}


def refusal_error(refused: Refused) -> ApiError:
    headers = {"Retry-After": str(refused.retry_after_s)}
    reason = refused.reason
    text = REFUSAL_TEXT[reason.value]
    if reason == "blocked":
        return ApiError(403, "blocked", text)
    if reason.is_capacity:
        return ApiError(503, "capacity", text, headers, reason=reason.value)
    return ApiError(429, "rate_limited", text, headers, reason=reason.value)


# A \u escape of a surrogate half. Two in a row make one character beyond U+FFFF; one alone
# is no character at all (UTF-8 has no encoding for it): nothing could store or answer it.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")  # Python's parser would take it as a float


def _holds_lone_surrogate(value: Any) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            pending += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            pending += item
    return False


def parse_json_body(headers: dict[bytes, bytes], body: bytes) -> Any:
    """The body as JSON (UTF-8, a BOM tolerated), or 422 `invalid_json` for anything the
    server could not hold: not UTF-8, not JSON (NaN and Infinity included), nested deeper
    or holding longer integers than Python parses, or a lone surrogate escape."""
    content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    if content_type != b"application/json":
        raise ApiError(415, "unsupported_media_type", "Send the request body as application/json.")
    invalid = ApiError(422, "invalid_json", "The request body is not valid JSON.")
    try:
        text = body.decode("utf-8-sig")
        parsed = json.loads(text, parse_constant=_not_json)
    # ValueError: JSONDecodeError, UnicodeDecodeError, an integer over Python's digit limit.
    except (ValueError, RecursionError) as exc:
        raise invalid from exc
    if _SURROGATE_ESCAPE.search(text) and _holds_lone_surrogate(parsed):
        raise invalid
    return parsed


async def _chunks(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "client_disconnected", "The client went away.")
        yield bytes(message.get("body", b""))
        if not message.get("more_body"):
            return


async def read_body(headers: dict[bytes, bytes], receive: Receive, max_bytes: int) -> bytes:
    """The whole body, refusing early (declared length) or as soon as it grows too big."""
    return await read_bounded(
        headers.get(b"content-length"),
        _chunks(receive),
        max_bytes,
        ApiError(413, "body_too_large", f"The request body is limited to {max_bytes} bytes."),
    )


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


async def send_json(
    send: Send, status: int, payload: bytes, extra: dict[str, str] | None = None
) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"cache-control", b"no-store"),
    ]
    headers += [(k.lower().encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def redis_unavailable(services: Services, operation: str, exc: Exception) -> ApiError:
    """Redis did not answer: logged, counted, and a 503 for the client (fail closed)."""
    log.error("redis unavailable", extra={"error": type(exc).__name__})
    if services.ops:
        services.ops.on_redis_error(operation)
    return ApiError(
        503,
        "unavailable",
        "The demo is temporarily unavailable. Please try again shortly.",
        {"Retry-After": "5"},
    )


class PostEndpoint:
    """A plain ASGI app for one public POST route: its answer, or its ApiError in the
    common JSON shape."""

    async def handle(self, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        raise NotImplementedError

    def refused(self, error: ApiError) -> None:
        """Called with every refusal answered (for counting)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "OPTIONS":
            # Not a CORS preflight (GuardMiddleware answers those): what this path takes.
            await send({"type": "http.response.start", "status": 204, "headers": OPTIONS_ANSWER})
            await send({"type": "http.response.body", "body": b""})
            return
        if scope["method"] != "POST":
            error = ApiError(405, "method_not_allowed", "Use POST.", {"Allow": "OPTIONS, POST"})
            self.refused(error)
            await send_json(send, error.status, error.body(), error.headers)
            return
        try:
            status, payload = await self.handle(scope, receive)
        except ApiError as error:
            self.refused(error)
            await send_json(send, error.status, error.body(), error.headers)
            return
        await send_json(send, status, payload)


class TokenEndpoint(PostEndpoint):
    """POST /api/token. With `admit=False` it skips pseudonyms and admission and only
    mints: the benchmark's baseline, never mounted by the served app."""

    def __init__(self, services: Services, *, admit: bool = True) -> None:
        self.services = services
        self.admit = admit
        self.records = SessionStore(services.redis)

    async def handle(self, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        return await self.issue(scope, receive)

    async def persona(self, persona_id: str) -> Persona:
        ops = self.services.ops
        # Sales' showcase override (ops/) may disable a persona at run time.
        catalog = await ops.catalog() if ops else self.services.catalog
        persona = catalog.get(persona_id)
        if persona is None or not persona.enabled:
            raise ApiError(404, "unknown_agent", f"There is no demo agent called {persona_id!r}.")
        return persona

    async def issue(self, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        services = self.services
        settings = services.settings
        limits = services.policies.limits
        raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
        headers = dict(raw_headers)
        body = await read_body(headers, receive, limits.http.max_body_bytes)
        persona = await self.persona(requested_persona(parse_json_body(headers, body)))
        duration_s = services.policies.session_duration_s(persona.max_duration_s)
        session_id = new_session_id()
        room = room_name(session_id)
        # The page's way to give the token back unused (policies/give_back.py); only its
        # keyed hash is recorded.
        release_secret = new_release_secret()
        issued_at = await self.admission(
            scope, raw_headers, persona, session_id, room, duration_s, release_secret
        )
        token = mint_token(
            api_key=settings.livekit_api_key,
            api_secret=settings.livekit_api_secret,
            agent_name=settings.agent_name,
            room=room,
            dispatch=DispatchMetadata(
                persona=persona.id,
                session_id=session_id,
                language=persona.language,
                max_duration_s=duration_s,
                issued_at=issued_at,
            ),
            ttl_s=limits.session.join_window_s,
            room_limits=limits.room,
        )
        payload = {
            "server_url": settings.livekit_url,
            "participant_token": token,
            "room_name": room,
            "session_id": session_id,
            "agent": persona.public_card(duration_s),
            "expires_at": iso(issued_at + limits.session.join_window_s),
            "max_duration_s": duration_s,
            "release_secret": release_secret,
        }
        return 201, json.dumps(payload, separators=(",", ":")).encode()

    async def admission(
        self,
        scope: Scope,
        raw_headers: list[tuple[bytes, bytes]],
        persona: Persona,
        session_id: str,
        room: str,
        duration_s: int,
        release_secret: str,
    ) -> float:
        """Decide and record admission in Redis; return the issue time (Redis clock)."""
        services = self.services
        if not self.admit:
            # No Redis to ask for its clock; the dispatch metadata needs a real time.
            return time.time()
        address = request_address(scope, services.settings.trusted_networks)
        if address is None:
            raise ApiError(400, "no_client_address", "The client address could not be read.")
        user_agent = next((v for k, v in raw_headers if k == b"user-agent"), b"")
        user_agent_text = user_agent.decode("latin-1")
        # Parsing a user agent costs milliseconds: a browser seen before is described in
        # the admission's one write, an unknown one only once admitted (describe_client),
        # so a refusal never pays for parsing whatever a flood puts in the header.
        family = known_ua_family(user_agent_text)
        try:
            salt = await services.hasher.current_salt()
            visitor = services.hasher.visitor(salt, address)
            networks = services.hasher.networks(salt, address, services.policies.limits.networks)
            record = {
                "session_id": session_id,
                "room": room,
                "persona": persona.id,
                "language": persona.language,
                "visitor": visitor,
                "salt_period": str(salt.period),
                "max_duration_s": str(duration_s),
                "join_window_s": str(services.policies.limits.session.join_window_s),
                "status": "issued",
                HASH_FIELD: services.give_back.digest(session_id, release_secret),
            }
            if family is not None:
                record["ua"] = services.hasher.user_agent(salt, user_agent_text)
                record["ua_family"] = family.label()
            decision = await services.admission.admit(
                visitor=visitor,
                session_id=session_id,
                persona=persona.id,
                duration_s=duration_s,
                record=record,
                networks=networks,
            )
        except REDIS_ERRORS as exc:
            raise redis_unavailable(services, "admission", exc) from exc
        if isinstance(decision, Refused):
            # DEBUG: a flood would otherwise become a log flood; refusals are counted in the
            # hourly stats (Redis) and metrics, which is what ops read.
            log.debug(
                "token refused",
                extra={
                    "reason": decision.reason.value,
                    "visitor": visitor,
                    "persona": persona.id,
                    "refusals_today": decision.refusals_today,
                },
            )
            if services.ops:  # metrics and the automatic defence
                await services.ops.on_refused(visitor, decision)
            raise refusal_error(decision)
        if family is None:
            await self.describe_client(session_id, salt, user_agent_text)
        if services.ops:
            services.ops.on_issued(persona.id)
        # DEBUG like refusals: the session record (Redis) and the issued-tokens metric are
        # the durable account of every token; a line each would double the hot path's cost.
        log.debug(
            "token issued",
            extra={"session_id": session_id, "persona": persona.id, "visitor": visitor},
        )
        return decision.issued_at

    async def describe_client(self, session_id: str, salt: Salt, user_agent: str) -> None:
        """The user-agent pseudonym and family of an admitted session whose user agent was
        not known at admission. The token is already counted: if Redis fails now, the
        record only lacks these two fields."""
        fields = {
            "ua": self.services.hasher.user_agent(salt, user_agent),
            "ua_family": ua_family(user_agent).label(),
        }
        try:
            await self.records.update(session_id, fields)
        except REDIS_ERRORS as exc:
            log.warning("user agent not recorded", extra={"error": type(exc).__name__})
