"""One agent per session: the worker claims the session before it takes a job, and again
when the job starts (policies/claim.py).

A dispatch whose session another job holds, or that is closed, is declined for good: a
visitor rejoining with the same token (or a refreshed one LiveKit sent) gets no second,
uncounted agent. A closed session's room is deleted, so the visitor is not left waiting in
an empty room; a taken session's room is never touched (the live call is in it).
If Redis does not answer at request time the job is declined for now (fail closed: a call
nobody counts never starts); at the job's start the request's claim already holds.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from livekit import api
from livekit.agents import JobContext, JobRequest

from agent.dispatch import JobSpec
from policies.claim import Claim, ClaimAnswer, Claims
from redisdb.connection import REDIS_ERRORS
from server.settings import Settings

log = logging.getLogger("agent.claiming")

ROOM_DELETE_TIMEOUT_S = 5.0


async def claim_at_request(
    request: JobRequest, spec: JobSpec, claims: Claims, settings: Settings
) -> bool:
    """True: the job is this worker's to accept. False: it was declined here."""
    try:
        claim = await claims.claim(spec.session_id, request.id)
    except REDIS_ERRORS as exc:
        log.error(
            "job declined: session not claimed (redis unavailable)",
            extra={
                "job_id": request.id,
                "session_id": spec.session_id,
                "error": type(exc).__name__,
            },
        )
        # Not terminate: LiveKit may offer it again (here or elsewhere) once Redis answers.
        await request.reject(terminate=False)
        return False
    if claim.ours:
        return True
    _declined(request.id, spec, claim)
    # terminate: no other worker may take it either; the answer will not change.
    await request.reject(terminate=True)
    if claim.answer is ClaimAnswer.CLOSED:
        await delete_room(settings, request.room.name)
    return False


async def claim_at_start(ctx: JobContext, spec: JobSpec, claims: Claims) -> bool:
    """The entrypoint's confirmation: True to run the call."""
    try:
        claim = await claims.claim(spec.session_id, ctx.job.id)
    except REDIS_ERRORS as exc:
        log.warning(
            "session claim not confirmed at start (redis unavailable): the request's holds",
            extra={"job_id": ctx.job.id, "session_id": spec.session_id,
                   "error": type(exc).__name__},
        )  # fmt: skip
        return True
    if claim.ours:
        return True
    _declined(ctx.job.id, spec, claim)
    if claim.answer is ClaimAnswer.CLOSED:
        try:
            await asyncio.wait_for(ctx.delete_room(), ROOM_DELETE_TIMEOUT_S)
        except TimeoutError:
            log.warning("room deletion timed out", extra={"session_id": spec.session_id})
    return False


def _declined(job_id: str, spec: JobSpec, claim: Claim) -> None:
    log.warning(
        "job declined",
        extra={
            "job_id": job_id,
            "session_id": spec.session_id,
            "claim": claim.answer.value,
            "reason": claim.why,
        },
    )


async def delete_room(settings: Settings, room: str) -> None:
    """Delete a room through LiveKit's RoomService; logged, never raised (the room also
    closes itself once empty)."""
    try:
        async with api.LiveKitAPI(
            settings.livekit_url,
            settings.livekit_api_key,
            settings.livekit_api_secret,
            timeout=aiohttp.ClientTimeout(total=ROOM_DELETE_TIMEOUT_S),
        ) as lkapi:
            await lkapi.room.delete_room(api.DeleteRoomRequest(room=room))
    except api.TwirpError as exc:
        if exc.code != api.TwirpErrorCode.NOT_FOUND:
            log.warning("room not deleted", extra={"room": room, "error": exc.code})
        return
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("room not deleted", extra={"room": room, "error": type(exc).__name__})
        return
    log.info("room of a closed session deleted", extra={"room": room})
