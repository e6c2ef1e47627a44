"""The token server: the public HTTP API (tokens, give-backs, the request form), the demo
page's routes, ops and the webhook, and the pieces they share (settings, errors, logging,
the LiveKit token). `token_server.py` is its entry point; importing this builds nothing."""
