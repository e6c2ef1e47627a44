"""Giving an unused token back: the page whose call could not start (its connection to
LiveKit failed, the visitor cancelled) releases the session at once, so its slots and
reserved minutes come back and "Call again" is admitted.

Only the page that received the token may do it: the token server answers each token with
a random `release_secret` and keeps only a keyed hash of it in the session record; the
session id alone (it is in the room name every LiveKit participant sees) is never enough.
Only a session still `issued` (no worker claimed it: no call is running) is released, and
the check is made inside release.lua, atomically with the release: a live call is never
closed this way. Releasing is exactly-once like every release; a repeat changes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum

from redis.asyncio import Redis

from policies.admission import Admission
from policies.replies import text
from redisdb import keys

GIVEN_BACK = "given_back"  # the record's status and release reason once given back
SECRET_BYTES = 24  # 192 random bits, url-safe text of 32 characters
SECRET_CHARS = 32
HASH_FIELD = "release_hash"
_LABEL = b"onecallflow release-secret v1"


def new_release_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


class GiveBackAnswer(StrEnum):
    GIVEN_BACK = "given_back"  # released now: slots and minutes are back
    REFUSED = "refused"  # no such session, or not this secret (told apart to nobody)
    STARTED = "started"  # a worker claimed the session: the call is running or ran
    CLOSED = "closed"  # released already (given back before, never joined, ended...)


@dataclass(frozen=True)
class GiveBackResult:
    answer: GiveBackAnswer
    status: str = ""  # the record's status when not given back now
    refunded_s: int = 0


class GiveBack:
    def __init__(self, redis: Redis, admission: Admission, key: str) -> None:
        self._redis = redis
        self._admission = admission
        self._key = key.encode()

    def digest(self, session_id: str, secret: str) -> str:
        """What the record holds: an HMAC under the server's VISITOR_HASH_SECRET, so even
        a copy of Redis gives no secret that a forged request could present."""
        message = b"|".join((_LABEL, session_id.encode(), secret.encode()))
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    async def give_back(self, session_id: str, secret: str) -> GiveBackResult:
        stored, status, released = (
            None if v is None else text(v)
            for v in await self._redis.hmget(
                keys.session(session_id), [HASH_FIELD, "status", "released_at"]
            )
        )
        # compare_digest: the time taken says nothing about how much of a guess matched.
        expected = self.digest(session_id, secret)
        if stored is None or not hmac.compare_digest(stored.encode(), expected.encode()):
            return GiveBackResult(GiveBackAnswer.REFUSED)
        if released is not None:
            return GiveBackResult(GiveBackAnswer.CLOSED, status or "")
        if status != "issued":
            return GiveBackResult(GiveBackAnswer.STARTED, status or "")
        # The status is checked again inside the script: a claim landing between the read
        # above and this release wins, and the call goes on.
        result = await self._admission.release(
            session_id, 0, GIVEN_BACK, {"status": GIVEN_BACK}, only_if_status="issued"
        )
        if result.released:
            return GiveBackResult(GiveBackAnswer.GIVEN_BACK, GIVEN_BACK, result.refunded_s)
        if result.detail == "status_changed":
            return GiveBackResult(GiveBackAnswer.STARTED, "started")
        if result.detail == "unknown":  # erased meanwhile
            return GiveBackResult(GiveBackAnswer.REFUSED)
        return GiveBackResult(GiveBackAnswer.CLOSED, result.previous_reason or "")
