"""The token server as it runs in production, plus one bench-only path.

`POST /bench/mint` is the same TokenEndpoint as `POST /api/token` with admission switched
off: same body parsing, persona lookup, token and response, no pseudonyms and no Redis.
It is the baseline (a) that the full paths (b, c, d) are compared with, in one process.
It exists only in this module, never in the served app.

`python -m bench.token_app` serves it as `python token_server.py` serves the app (HOST,
PORT, the HTTP limits of server/http_limits.py).
"""

from __future__ import annotations

from ops.metrics import LatencyMiddleware
from server.app import configured_app, serve
from server.services import Services
from server.token_endpoint import TokenEndpoint

if __name__ == "__main__":
    app = configured_app()
    services: Services = app.state.services
    assert services.ops is not None
    # Wrapped like /api/token (request-latency metric), so only admission differs.
    app.state.fast_lane["/bench/mint"] = LatencyMiddleware(
        TokenEndpoint(services, admit=False), services.ops.metrics, route="/bench/mint"
    )
    serve(app, services.settings)
