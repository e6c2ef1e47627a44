"""The token server as it runs in production, plus one bench-only path.

`POST /bench/mint` is the same TokenEndpoint as `POST /api/token` with admission switched
off: same body parsing, persona lookup, token and response, no pseudonyms and no Redis.
It is the baseline (a) that the full path (b) and the refusal path (c) are compared with,
in one process. It exists only in this module, never in the served app.
"""

from __future__ import annotations

import token_server
from ops.metrics import LatencyMiddleware
from token_endpoint import TokenEndpoint

app = token_server.app
services: token_server.Services = app.state.services
assert services.ops is not None
# Wrapped like /api/token (request-latency metric), so only admission differs.
app.state.fast_lane["/bench/mint"] = LatencyMiddleware(
    TokenEndpoint(services, admit=False), services.ops.metrics, route="/bench/mint"
)
