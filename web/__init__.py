"""The browser demo page: its sources (src/), build (build.mjs → dist/) and the routes that
serve it from the token server (routes.py)."""

from web.routes import web_router

__all__ = ["web_router"]
