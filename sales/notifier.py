"""Mailing sales, one request at a time, until the relay takes it.

The request is saved first (with its place in the queue `{ocf}:reqp`), then mailed by a
background task of each token-server process: at once after a submission, and every
`notify.poll_s` for whatever is due. Taking a mail from the queue holds it for
`notify.lease_s` and counts the attempt, in one script, so two processes never send the
same mail together and one that dies mid-send leaves it to the others once the hold ends
(a restart, or another process, sends it: nothing lost). A failure puts it back with a
longer wait each time (`first_retry_s`, doubling, at most `max_retry_s`), for as long as
the request is kept. What is kept is delivery metadata only (status, attempts, times,
message id, a failure code).

A mail the relay took but whose success could not be written (Redis failing at that
moment) is remembered by this process and written before anything else is sent, so it is
not sent again by this process; if the process dies in that window, another one sends it
once more, under the same Message-ID.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

from redisdb.background import running_task
from redisdb.connection import REDIS_ERRORS
from sales.mail import DeliveryFailed, SmtpConfig, compose, deliver, message_id
from sales.policy import NotifyRules
from sales.store import RequestStore

log = logging.getLogger("sales.notify")

BATCH = 10


def _when(ts: str) -> str:
    try:
        return datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return ts


class Notifier:
    def __init__(
        self,
        store: RequestStore,
        config: SmtpConfig,
        rules: NotifyRules,
        on_outcome: Callable[[str], None] = lambda _: None,
    ) -> None:
        self._store = store
        self._config = config
        self._rules = rules
        # Counts only: "sent", "failed", "redis_error" (metrics).
        self._on_outcome = on_outcome
        self._wake = asyncio.Event()
        # Delivered, not yet recorded: reference -> (message id, partial).
        self._unrecorded: dict[str, tuple[str, str]] = {}

    def wake(self) -> None:
        """A request was just queued: look now rather than at the next poll."""
        self._wake.set()

    async def _record_delivered(self) -> None:
        for reference, (mid, partial) in list(self._unrecorded.items()):
            await self._store.mark_sent(reference, mid, partial)
            del self._unrecorded[reference]

    async def send_due(self) -> int:
        """Send every mail due now; returns how many the relay took."""
        await self._record_delivered()
        sent = 0
        while True:
            claimed = await self._store.claim_due(self._rules.lease_s, BATCH)
            if not claimed:
                return sent
            for reference, attempts in claimed:
                sent += await self._send_one(reference, attempts)
            if len(claimed) < BATCH:
                return sent

    async def _send_one(self, reference: str, attempts: int) -> int:
        stored = await self._store.get(reference)
        if stored is None:  # erased since it was taken
            return 0
        mid = message_id(reference, self._config)
        mail = compose(stored.fields, self._config, _when(stored.fields.get("created_at", "")))
        try:
            partial = await asyncio.to_thread(deliver, self._config, mail)
        except DeliveryFailed as failure:
            delay = self._rules.retry_delay_s(attempts)
            self._on_outcome("failed")
            log.warning(
                "mail to sales failed; retrying",
                extra={"reference": reference, "error": failure.code, "attempt": attempts,
                       "retry_in_s": delay},
            )  # fmt: skip
            await self._store.mark_failed(reference, failure.code, delay, mid)
            return 0
        self._on_outcome("sent")
        self._unrecorded[reference] = (mid, partial)
        await self._record_delivered()
        return 1

    async def _run(self) -> None:
        while True:
            try:
                await self.send_due()
            except REDIS_ERRORS as exc:
                self._on_outcome("redis_error")
                log.error("mail queue unreachable", extra={"error": type(exc).__name__})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._rules.poll_s)
            self._wake.clear()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The sender, for the app's lifetime; it starts with whatever was left due."""
        async with running_task(self._run(), "sales-notifier"):
            yield
