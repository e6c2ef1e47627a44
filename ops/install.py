"""Wire ops into the token server: routers and the latency middleware. Ops refuses with
`server.errors.ApiError`, rendered by the token server's one handler like the public API's."""

from __future__ import annotations

from fastapi import FastAPI
from redis.asyncio import Redis

from agents_catalog import Catalog
from ops.api import build_api, build_metrics_route, build_requests_api
from ops.blocks import AutoDefence
from ops.context import build_context
from ops.metrics import LatencyMiddleware, Metrics
from ops.page import build_page
from ops.runtime import OpsRuntime
from ops.signin import SigninGuard
from ops.webhook import build_webhook
from policies import Policies
from policies.admission import Admission
from policies.pseudonyms import VisitorHasher
from sales.store import RequestStore
from server.settings import Settings


def install_ops(
    app: FastAPI,
    *,
    settings: Settings,
    redis: Redis,
    policies: Policies,
    catalog: Catalog,
    hasher: VisitorHasher,
    admission: Admission,
    requests: RequestStore,
) -> OpsRuntime:
    ctx = build_context(
        settings,
        redis=redis,
        policies=policies,
        catalog=catalog,
        hasher=hasher,
        admission=admission,
        requests=requests,
    )
    metrics = Metrics()
    runtime = OpsRuntime(
        ctx=ctx,
        metrics=metrics,
        defence=AutoDefence(ctx),
        signin=SigninGuard(ctx, lambda op: metrics.redis_errors.labels(op).inc()),
    )
    ctx.showcase.on_error = lambda: runtime.on_redis_error("showcase")

    app.include_router(build_requests_api(runtime))
    app.include_router(build_api(runtime))
    app.include_router(build_page(runtime))
    app.include_router(build_metrics_route(runtime))
    app.include_router(build_webhook(runtime))
    app.add_middleware(LatencyMiddleware, metrics=runtime.metrics)
    # Paths the token server answers ahead of the framework (its "fast lane") bypass
    # middleware added here: time them where they are mounted.
    fast_lane = getattr(app.state, "fast_lane", None)
    if isinstance(fast_lane, dict):
        for path, endpoint in list(fast_lane.items()):
            fast_lane[path] = LatencyMiddleware(endpoint, runtime.metrics, route=path)
    return runtime
