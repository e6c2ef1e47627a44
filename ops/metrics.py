"""Prometheus metrics: `/metrics` (behind the ops token, like the rest of ops).

Labels are drawn from closed sets only (persona ids from the catalogue, refusal reasons,
route templates, LiveKit event names): never a pseudonym, an address, a session id or a
raw path, so a scrape reveals nothing about any visitor and the series count stays fixed.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Receive, Scope, Send

from ops.context import OpsContext
from redisdb import keys

METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}
WEBHOOK_EVENTS = {
    "room_started", "room_finished", "participant_joined", "participant_left",
    "participant_connection_aborted", "track_published", "track_unpublished",
    "egress_started", "egress_updated", "egress_ended", "ingress_started", "ingress_ended",
}  # fmt: skip
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        # Our own registry: one app, its own series (tests run several apps in a process).
        self.registry = CollectorRegistry()
        r = self.registry
        self.tokens_issued = Counter(
            "ocf_tokens_issued", "Demo tokens issued, by persona.", ["persona"], registry=r
        )
        self.refusals = Counter(
            "ocf_token_refusals", "Token requests refused by admission, by reason.", ["reason"],
            registry=r,
        )  # fmt: skip
        self.redis_errors = Counter(
            "ocf_redis_errors", "Redis calls that failed, by operation.", ["operation"],
            registry=r,
        )  # fmt: skip
        self.auto_blocks = Counter(
            "ocf_auto_blocks", "Visitors blocked by the automatic defence.", registry=r
        )
        self.sessions_closed = Counter(
            "ocf_sessions_closed_by_ops",
            "Sessions closed outside the worker, by outcome (abandoned, never_joined, "
            "given_back: the page gave its unused token back).",
            ["outcome"],
            registry=r,
        )
        self.webhooks = Counter(
            "ocf_livekit_webhooks", "LiveKit webhook deliveries, by event and outcome.",
            ["event", "outcome"], registry=r,
        )  # fmt: skip
        self.sales_requests = Counter(
            "ocf_sales_requests",
            "POST /api/requests answers, by outcome (accepted, invalid, rate_limited, "
            "honeypot, unavailable).",
            ["outcome"],
            registry=r,
        )
        self.sales_notifications = Counter(
            "ocf_sales_notifications", "Mails to sales, by outcome (sent, failed).",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.sales_pending = Gauge(
            "ocf_sales_notifications_pending",
            "Mails to sales not yet taken by the relay (queued or being retried).",
            registry=r,
        )
        self.latency = Histogram(
            "ocf_http_request_duration_seconds",
            "HTTP request latency, by route template and method.",
            ["route", "method"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        self.active_sessions = Gauge(
            "ocf_active_sessions", "Sessions holding a concurrency slot now.", registry=r
        )
        self.minutes_used = Gauge(
            "ocf_minutes_used_today",
            "Call minutes reserved today (running calls at their maximum, ended calls as used).",
            registry=r,
        )
        self.minutes_ceiling = Gauge(
            "ocf_minutes_ceiling_per_day", "The daily minutes ceiling (limits.yaml).", registry=r
        )

    def webhook(self, event: str, outcome: str) -> None:
        self.webhooks.labels(event if event in WEBHOOK_EVENTS else "other", outcome).inc()

    async def refresh(self, ctx: OpsContext) -> None:
        """Read the live figures from Redis just before a scrape."""
        now = time.time()
        async with ctx.redis.pipeline(transaction=False) as pipe:
            pipe.zcount(keys.global_active(), now, "+inf")
            pipe.get(keys.global_seconds(int(now // 86_400)))
            pipe.zcard(keys.requests_pending())
            active, used_s, pending = await pipe.execute()
        self.sales_pending.set(int(pending))
        self.active_sessions.set(int(active))
        self.minutes_used.set(int(used_s or 0) / 60)
        self.minutes_ceiling.set(ctx.policies.limits.global_.minutes_per_day)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class LatencyMiddleware:
    """Times every HTTP request under its route template (`/api/token`, not the URL)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, route: str | None = None) -> None:
        self.app = app
        self.metrics = metrics
        # Set for a plain ASGI app mounted on one path (the token server's fast lane),
        # which the framework's router never sees.
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            route = scope.get("route")
            template = self.route or getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.latency.labels(template, method if method in METHODS else "other").observe(
                time.perf_counter() - started
            )
