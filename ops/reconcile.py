"""Closing sessions the worker did not close.

- `abandon`: LiveKit says the room is finished (or the agent left it) and the record is
  still open: the worker crashed or was killed. The record gets an end time, a duration and
  reason `abandoned`; the slot is released and unused minutes refunded.
- `expire_unjoined`: a token nobody used to join within its window: released with reason
  `never_joined` so its reserved minutes come back (its slots' leases ran out with the
  window). Only a session still `issued` is closed, checked inside the release script
  itself: a worker claiming the session at that instant (policies/claim.lua) either comes
  first and the sweeper leaves its call alone, or finds the session closed and declines
  the job.

Both go through Admission.release (release.lua), which acts once per session: whichever of
the worker, a webhook delivery or the sweeper comes first closes the record, every later
call changes nothing. The end fields are written by that same script call, so a record is
never half closed.
"""

from __future__ import annotations

import logging

from ops.context import OpsContext
from policies.clock import redis_clock
from policies.replies import text
from redisdb import keys

log = logging.getLogger("ops.reconcile")


def _stamp(ts: float) -> str:
    return f"{ts:.3f}"


async def abandon(
    ctx: OpsContext, session_id: str, ended_at: float, room_started_at: float | None = None
) -> str:
    """'abandoned' if this call closed the session, else why not ('unknown',
    'already_released')."""
    raw = await ctx.redis.hmget(
        keys.session(session_id),
        ["issued_at", "started_at", "max_duration_s", "released_at"],
    )
    issued_at, started_at, max_duration, released_at = (
        text(v) if v is not None else None for v in raw
    )
    if issued_at is None:
        return "unknown"
    if released_at is not None:
        return "already_released"
    # The call began when the worker recorded it; failing that when LiveKit created the
    # room (the visitor joined but no agent recorded a start); failing that at issue.
    start = float(started_at) if started_at else (room_started_at or float(issued_at))
    cap = float(max_duration) if max_duration else ctx.policies.limits.session.max_duration_s
    duration = min(max(0.0, ended_at - start), cap)
    result = await ctx.admission.release(
        session_id,
        duration,
        "abandoned",
        {
            "status": "abandoned",
            "end_reason": "abandoned",
            "ended_at": _stamp(ended_at),
            "duration_s": f"{duration:.1f}",
        },
    )
    if result.released:
        log.info(
            "session abandoned",
            extra={"session_id": session_id, "duration_s": round(duration, 1)},
        )
        return "abandoned"
    return result.detail


async def expire_unjoined(ctx: OpsContext, now: float | None = None) -> list[str]:
    """Release every open session whose token was never used to join; returns their ids.

    Unclaimed sessions are the members of the global unjoined index (admission adds them,
    a claim or a release takes them out; admission never prunes it, so a token stays there
    after its window until closed), plus the global lease set for sessions admitted before
    that index existed: one read per open session, not a scan of every record. `now` is
    Redis' clock (issue times are)."""
    now = await redis_clock(ctx.redis) if now is None else now
    async with ctx.redis.pipeline(transaction=False) as pipe:
        pipe.zrangebyscore(keys.global_unjoined(), "-inf", now)
        pipe.zrange(keys.global_active(), 0, -1)
        overdue, active = await pipe.execute()
    members = sorted({text(m) for m in (*overdue, *active)})
    if not members:
        return []
    async with ctx.redis.pipeline(transaction=False) as pipe:
        for session_id in members:
            pipe.hmget(
                keys.session(session_id), ["status", "issued_at", "join_window_s", "released_at"]
            )
        rows = await pipe.execute()
    margin = ctx.policies.limits.session.lease_margin_s
    expired = []
    gone = []
    for session_id, row in zip(members, rows, strict=True):
        status, issued_at, join_window, released_at = (
            text(v) if v is not None else None for v in row
        )
        if issued_at is None:
            gone.append(session_id)  # record expired or erased: nothing left to close
            continue
        if status != "issued" or released_at is not None:
            continue
        window = float(join_window or ctx.policies.limits.session.join_window_s)
        if now <= float(issued_at) + window + margin:
            continue
        result = await ctx.admission.release(
            session_id, 0, "never_joined", {"status": "never_joined"}, only_if_status="issued"
        )
        if result.released:
            expired.append(session_id)
    if gone:
        await ctx.redis.zrem(keys.global_unjoined(), *gone)
    if expired:
        log.info("sessions never joined", extra={"count": len(expired)})
    return expired
