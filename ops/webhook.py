"""`POST /livekit/webhook`: LiveKit tells us a room finished or a participant left.

The body is verified with livekit-api's WebhookReceiver (a JWT signed with our API secret
carrying the body's sha256): anything else is refused with 401 and changes nothing.
Only two events act, and only on a session the worker left open:
- `room_finished`: the room is gone; the session is closed as `abandoned`.
- `participant_left` of the *agent*: the worker's participant left without closing the
  session (a healthy worker closes the record before it leaves), so the worker died.
The visitor's own `participant_left` does nothing: the worker is closing that session at
the same moment (user hangup) and must not be raced; if the worker is dead, `room_finished`
follows within the room's departure timeout.
Duplicate and out-of-order deliveries are harmless: closing happens once (release.lua).
A Redis failure answers 503 so LiveKit delivers the event again.
"""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from google.protobuf.json_format import ParseError
from livekit.api import TokenVerifier, WebhookReceiver
from livekit.protocol.models import ParticipantInfo
from livekit.protocol.webhook import WebhookEvent

from ops.auth import read_body
from ops.reconcile import abandon
from ops.runtime import OpsRuntime
from redisdb.connection import REDIS_ERRORS
from server.errors import ApiError
from server.livekit_token import room_name

log = logging.getLogger("ops.webhook")

MAX_BODY = 64 * 1024
ROOM_PREFIX = room_name("")


def session_of(room: str) -> str | None:
    if room.startswith(ROOM_PREFIX) and len(room) > len(ROOM_PREFIX):
        return room[len(ROOM_PREFIX) :]
    return None


def _seconds(value: int) -> float | None:
    """LiveKit timestamps: seconds, or milliseconds in newer fields."""
    if value <= 0:
        return None
    return value / 1000 if value > 10**11 else float(value)


def build_webhook(runtime: OpsRuntime) -> APIRouter:
    settings = runtime.ctx.settings
    receiver = WebhookReceiver(TokenVerifier(settings.livekit_api_key, settings.livekit_api_secret))
    router = APIRouter()

    @router.post("/livekit/webhook")
    async def livekit_webhook(request: Request) -> JSONResponse:
        body = await read_body(request, MAX_BODY)
        auth = request.headers.get("authorization", "")
        # LiveKit sends the bare JWT; accept a "Bearer " prefix from proxies that add one.
        token = auth.split(" ", 1)[1] if auth.lower().startswith("bearer ") else auth
        try:
            event = receiver.receive(body.decode("utf-8"), token)
        except (ParseError, UnicodeDecodeError) as exc:
            runtime.metrics.webhook("other", "bad_body")
            raise ApiError(400, "invalid_event", "The event is not valid JSON.") from exc
        except Exception as exc:  # the receiver raises bare Exception
            runtime.metrics.webhook("other", "bad_signature")
            log.warning("webhook refused", extra={"error": type(exc).__name__})
            raise ApiError(401, "invalid_signature", "Webhook signature not valid.") from exc
        try:
            outcome = await handle(runtime, event)
        except REDIS_ERRORS as exc:
            runtime.on_redis_error("webhook")
            runtime.metrics.webhook(event.event, "retry")
            raise ApiError(
                503, "unavailable", "Redis unreachable; deliver again.", {"Retry-After": "5"}
            ) from exc
        runtime.metrics.webhook(event.event, outcome)
        return JSONResponse({"event": event.event, "outcome": outcome})

    return router


async def handle(runtime: OpsRuntime, event: WebhookEvent) -> str:
    if event.event == "room_finished":
        pass
    elif event.event == "participant_left":
        if event.participant.kind != ParticipantInfo.Kind.AGENT:
            return "ignored"
    else:
        return "ignored"
    session_id = session_of(event.room.name)
    if session_id is None:
        return "not_ours"
    ended_at = _seconds(event.created_at) or time.time()
    room_started = _seconds(event.room.creation_time_ms) or _seconds(event.room.creation_time)
    outcome = await abandon(runtime.ctx, session_id, ended_at, room_started)
    if outcome == "abandoned":
        runtime.metrics.sessions_closed.labels("abandoned").inc()
    return outcome
