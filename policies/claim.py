"""Claiming a session: the one job that runs its call takes it, in one Redis script.

A token is a ticket for one call. The worker claims the session (claim.lua) when LiveKit
offers it the job and again when the job starts; the record goes `issued` -> `started`
with the job's id, and any other dispatch for that session (a visitor rejoining with the
same token, or with a refreshed one) finds it taken or closed and is declined. The record
never goes back: nothing sets a closed session to `started` again (docs/sessions.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from redis.asyncio import Redis

from policies.model import Policies
from policies.replies import text
from redisdb import keys
from redisdb.scripts import lua_file

_HERE = Path(__file__).resolve().parent

# What a claim writes to the record, and nothing else (the privacy allow-list: a LiveKit
# job id and a time are technical data about the session, nothing about the visitor).
CLAIM_FIELDS = ("status", "claimed_by", "claimed_at", "lease_expires_at")


class ClaimAnswer(StrEnum):
    CLAIMED = "claimed"  # this job now holds the session
    YOURS = "yours"  # this job held it already (entrypoint after request, resumed job)
    TAKEN = "taken"  # another job holds it: that job's call is live in the session's room
    CLOSED = "closed"  # ended, abandoned or never joined: a call never restarts
    UNKNOWN = "unknown"  # no record: never issued, expired or erased


@dataclass(frozen=True)
class Claim:
    answer: ClaimAnswer
    status: str  # the record's status as the script saw it ("" when there is none)
    release_reason: str = ""

    @property
    def ours(self) -> bool:
        """This job may run the call."""
        return self.answer in (ClaimAnswer.CLAIMED, ClaimAnswer.YOURS)

    @property
    def why(self) -> str:
        """Why the session is not ours, for logs (holds no visitor data)."""
        if self.answer is ClaimAnswer.TAKEN:
            return f"session already claimed by another job (status {self.status})"
        if self.answer is ClaimAnswer.CLOSED:
            return f"session closed (status {self.status}, released: {self.release_reason})"
        if self.answer is ClaimAnswer.UNKNOWN:
            return "session unknown (never issued, expired or erased)"
        return f"session {self.answer.value}"


class Claims:
    def __init__(self, redis: Redis, policies: Policies) -> None:
        self._policies = policies
        self._claim = lua_file(redis, _HERE / "claim.lua")

    async def claim(self, session_id: str, job_id: str) -> Claim:
        """Take the session for this job; raises Redis errors (the caller decides whether
        an unconfirmed claim may go on: never at job request)."""
        if not job_id:
            raise ValueError("a claim needs the job's id")
        result = await self._claim(
            keys=[keys.session(session_id), keys.global_active(), keys.global_unjoined()],
            args=[
                keys.PREFIX,
                session_id,
                job_id,
                self._policies.limits.session.lease_margin_s,
            ],
        )
        answer, status, reason = (text(part) for part in result)
        return Claim(ClaimAnswer(answer), status, reason)
