"""The session record's start and end, written to Redis without ever holding up the call.

Each write is tried at once; if Redis is unreachable it waits in a small in-memory outbox
and is retried, in order, with a capped exponential backoff until Redis answers again.
The outbox is bounded (a worker must not grow without limit while Redis is down); a
write dropped for lack of room is logged. Only the categories the privacy policy names
are written: times, duration, end reason, counts, usage and connection data. Never a
word of the conversation.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from policies.admission import Admission
from redisdb.connection import REDIS_ERRORS
from sessions.store import SessionStore, Update

log = logging.getLogger("agent.recording")

# Fields the worker writes, and nothing else (checked in tests against the policy's list).
# No status at start: the claim (policies/claim.lua) moved it to `started` atomically, and
# only the release closes it; a start write never touches it (a record never goes back).
START_FIELDS = ("started_at", "join_delay_s")
# Release reasons written by ops (ops/reconcile.py) when the worker had not closed the
# session itself: the worker's own end fields, when they arrive late, still belong.
CLOSED_BY_OPS = frozenset({"abandoned", "never_joined"})
END_FIELDS = (
    "status",
    "ended_at",
    "duration_s",
    "end_reason",
    "turns",
    "llm_prompt_tokens",
    "llm_completion_tokens",
    "stt_audio_s",
    "tts_chars",
    "connection_quality",
    "reconnects",
)


@dataclass(frozen=True)
class Backoff:
    initial_s: float = 0.5
    max_s: float = 30.0

    def delays(self) -> Any:
        delay = self.initial_s
        while True:
            yield delay
            delay = min(delay * 2, self.max_s)


@dataclass
class _Write:
    name: str
    run: Callable[[], Awaitable[object]]


class RecordOutbox:
    """Ordered, bounded, retried Redis writes for one job process."""

    def __init__(self, *, max_pending: int = 64, backoff: Backoff | None = None) -> None:
        self._pending: deque[_Write] = deque()
        self._max_pending = max_pending
        self._backoff = backoff or Backoff()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def submit(self, name: str, run: Callable[[], Awaitable[object]]) -> None:
        if len(self._pending) >= self._max_pending:
            dropped = self._pending.popleft()
            log.error(
                "record outbox full, dropping the oldest write", extra={"write": dropped.name}
            )
        self._pending.append(_Write(name, run))
        self._idle.clear()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="record-outbox")

    async def _drain(self) -> None:
        delays = self._backoff.delays()
        failures = 0
        while self._pending:
            write = self._pending[0]
            try:
                await write.run()
            except REDIS_ERRORS as exc:
                failures += 1
                delay = next(delays)
                log.warning(
                    "redis unavailable, record write queued for retry",
                    extra={
                        "write": write.name,
                        "attempt": failures,
                        "retry_in_s": delay,
                        "pending": len(self._pending),
                        "error": type(exc).__name__,
                    },
                )
                await asyncio.sleep(delay)
                continue
            self._pending.popleft()
            if failures:
                log.info(
                    "record write delivered after retries",
                    extra={"write": write.name, "attempts": failures + 1},
                )
                failures = 0
                delays = self._backoff.delays()
        self._idle.set()

    async def flush(self, timeout_s: float) -> bool:
        """Wait until every write is delivered; False if some are still pending."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class SessionRecorder:
    """Start and end of one session record (created by admission at token time)."""

    def __init__(
        self, session_id: str, store: SessionStore, admission: Admission, outbox: RecordOutbox
    ) -> None:
        self.session_id = session_id
        self._store = store
        self._admission = admission
        self._outbox = outbox

    def started(self, *, started_at: float, join_delay_s: float | None) -> None:
        fields = {"started_at": f"{started_at:.3f}"}
        if join_delay_s is not None:
            fields["join_delay_s"] = f"{max(0.0, join_delay_s):.3f}"

        async def write() -> None:
            # Only on an open record: a start delivered after the session was closed (by
            # this call's own end, or by ops) must not dress a closed record as running.
            written = await self._store.update_open(self.session_id, fields)
            if written is not Update.WRITTEN:
                log.warning(
                    "session start not recorded",
                    extra={"session_id": self.session_id, "record": written.name.lower()},
                )

        self._outbox.submit("start", write)

    def ended(self, *, used_s: float, reason: str, fields: dict[str, str]) -> None:
        unknown = set(fields) - set(END_FIELDS)
        if unknown:
            raise ValueError(f"not a session record field: {sorted(unknown)}")

        async def write() -> None:
            # Releases the concurrency slot, refunds unused minutes and completes the
            # record in one atomic, idempotent script: a retry after a lost reply is safe.
            result = await self._admission.release(self.session_id, used_s, reason, extra=fields)
            if result.previous_reason in CLOSED_BY_OPS:
                # Closed by ops meanwhile (webhook after a long Redis outage, or the
                # never-joined sweeper): the slot and refund stand, but what the call
                # really was (end reason, usage, quality) is only known here; keep it.
                await self._store.update(self.session_id, fields)
            log.info(
                "session recorded",
                extra={
                    "session_id": self.session_id,
                    "end_reason": reason,
                    "release": result.detail,
                    "refunded_s": result.refunded_s,
                },
            )

        self._outbox.submit("end", write)
