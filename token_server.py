"""The token server's entry point; the server itself is the package server/.

`python token_server.py` serves it as production does (server.app.main: HOST:PORT, the HTTP
limits of server/http_limits.py). `uvicorn token_server:app` serves it without those
limits (not for production): `app` is built on first access, so importing this module
builds nothing and leaves logging alone.
"""

from __future__ import annotations

from fastapi import FastAPI

import server.app


def main() -> None:
    server.app.main()


def __getattr__(name: str) -> FastAPI:
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # Kept as a plain module attribute: built once, whoever asks next.
    app = globals()["app"] = server.app.configured_app()
    return app


if __name__ == "__main__":
    main()
