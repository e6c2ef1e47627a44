"""What the token server holds for ops: the shared context, metrics, automatic defence,
the sign-in guard, the hooks its token path calls (issued, refused, Redis error), and its
background duties (the never-joined sweeper; the hash secret's fingerprint)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from agents_catalog import Catalog
from ops.blocks import AutoDefence
from ops.context import OpsContext
from ops.metrics import Metrics
from ops.reconcile import expire_unjoined
from ops.signin import SigninGuard
from policies.admission import Refused
from redisdb.background import running_task
from redisdb.connection import REDIS_ERRORS

log = logging.getLogger("ops")


@dataclass
class OpsRuntime:
    ctx: OpsContext
    metrics: Metrics
    defence: AutoDefence
    signin: SigninGuard

    async def catalog(self) -> Catalog:
        """The catalogue with sales' showcase override applied (cached a few seconds)."""
        return await self.ctx.showcase.catalog()

    def on_issued(self, persona: str) -> None:
        self.metrics.tokens_issued.labels(persona).inc()

    def on_given_back(self) -> None:
        self.metrics.sessions_closed.labels("given_back").inc()

    def on_redis_error(self, operation: str) -> None:
        self.metrics.redis_errors.labels(operation).inc()

    def on_notification(self, outcome: str) -> None:
        """A mail to sales sent or failed, or its queue unreachable (sales/notifier.py)."""
        if outcome == "redis_error":
            self.on_redis_error("sales_notify")
        else:
            self.metrics.sales_notifications.labels(outcome).inc()

    async def on_refused(self, visitor: str, refused: Refused) -> None:
        """Count the refusal and let the automatic defence act; never fails the request
        (the refusal is already decided and recorded)."""
        self.metrics.refusals.labels(refused.reason.value).inc()
        try:
            if await self.defence.on_refusal(visitor, refused):
                self.metrics.auto_blocks.inc()
                log.warning(
                    "visitor blocked automatically",
                    extra={"visitor": visitor, "refusals_today": refused.refusals_today},
                )
        except REDIS_ERRORS as exc:
            self.on_redis_error("auto_block")
            log.error("auto block not written", extra={"error": type(exc).__name__})

    async def sweep_once(self) -> int:
        expired = await expire_unjoined(self.ctx)
        if expired:
            self.metrics.sessions_closed.labels("never_joined").inc(len(expired))
        return len(expired)

    async def assert_fingerprint(self) -> None:
        """Tell ops tools which VISITOR_HASH_SECRET made the data (ops/privacy.py)."""
        try:
            await self.ctx.hasher.assert_fingerprint()
        except REDIS_ERRORS as exc:
            self.on_redis_error("fingerprint")
            log.error("secret fingerprint not written", extra={"error": type(exc).__name__})

    async def _sweep_forever(self) -> None:
        every = self.ctx.rules.sessions.sweep_every_s
        while True:
            await asyncio.sleep(every)
            # Re-asserted like the salts: back within a sweep after Redis lost its data.
            await self.assert_fingerprint()
            try:
                await self.sweep_once()
            except REDIS_ERRORS as exc:
                self.on_redis_error("sweep")
                log.error("never-joined sweep failed", extra={"error": type(exc).__name__})

    @contextlib.asynccontextmanager
    async def background(self) -> AsyncIterator[None]:
        """Writes the secret's fingerprint at start and runs the never-joined sweeper for
        the app's lifetime (every process may run it: a release happens once whoever calls
        it)."""
        await self.assert_fingerprint()
        async with running_task(self._sweep_forever(), "ops-sweeper"):
            yield
