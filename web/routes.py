"""Serve the demo page from the token server's own origin: `/` (index.html with this
deployment's config) and `/assets/*` (the content-hashed bundle built by `make web`).

Every answer carries a Content-Security-Policy that lets the page talk to its own origin and
to LIVEKIT_URL only: no CDN, no fonts, no analytics, nothing inline. No cookie is ever set.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import yaml
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from policies import load_policies
from sales.policy import RequestRules, load_request_rules
from server.settings import ConfigError, Settings

log = logging.getLogger("web")

HERE = Path(__file__).resolve().parent
DIST_DIR = HERE / "dist"
PAGE_SETTINGS = HERE / "page.yaml"
CONFIG_SLOT = "{{config}}"

MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Best first; each asset has precompressed siblings written by web/build.mjs.
ENCODINGS = (("br", ".br"), ("gzip", ".gz"))
ASSET_CACHE = "public, max-age=31536000, immutable"

Seconds = Annotated[int, Field(ge=1, le=600)]


class PageSettings(BaseModel):
    """web/page.yaml: how long the page waits before telling the visitor what went wrong."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connect_timeout_s: Seconds
    agent_join_timeout_s: Seconds
    end_grace_s: Seconds
    warn_remaining_s: Annotated[int, Field(ge=0, le=600)]


def load_page_settings(path: Path = PAGE_SETTINGS) -> PageSettings:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        return PageSettings.model_validate(raw)
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def livekit_sources(livekit_url: str) -> list[str]:
    """The CSP sources LiveKit needs: its websocket and, on the same host, the HTTP
    endpoint livekit-client asks why a websocket failed (/rtc/validate)."""
    parts = urlsplit(livekit_url)
    if parts.scheme not in ("ws", "wss", "http", "https") or not parts.netloc:
        raise ConfigError(f"LIVEKIT_URL: {livekit_url!r} is not a ws:// or wss:// URL")
    secure = parts.scheme in ("wss", "https")
    host = parts.netloc.lower()
    return [f"{'wss' if secure else 'ws'}://{host}", f"{'https' if secure else 'http'}://{host}"]


def security_headers(settings: Settings) -> dict[str, str]:
    frame_ancestors = " ".join(settings.allowed_origins) or "'none'"
    csp = "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self'",
            "media-src 'self' blob: mediastream:",
            "connect-src 'self' " + " ".join(livekit_sources(settings.livekit_url)),
            "base-uri 'none'",
            "form-action 'none'",
            # The page may be embedded by OneCallFlow's own sites (ALLOWED_ORIGINS) only.
            f"frame-ancestors {frame_ancestors}",
        ]
    )
    headers = {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Permissions-Policy": (
            "microphone=(self), camera=(), geolocation=(), payment=(), usb=(), browsing-topics=()"
        ),
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
    }
    if settings.production:
        headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
    return headers


def request_form_config(rules: RequestRules, retention_days: int) -> dict[str, object]:
    """What the page checks its sales request form against: the server's own rules, so the
    two never disagree (POST /api/requests checks them again)."""
    return {
        "fields": {name: length.model_dump() for name, length in rules.fields},
        "languages": list(rules.languages),
        "per_visitor_per_day": rules.limits.per_visitor_per_day,
        # The consent line says how long the request is kept.
        "retention_days": retention_days,
    }


def page_config(
    settings: Settings, page: PageSettings, form: dict[str, object]
) -> dict[str, object]:
    url = settings.privacy_policy_url
    if urlsplit(url).scheme not in ("http", "https"):
        raise ConfigError(f"PRIVACY_POLICY_URL: {url!r} must be an http(s) URL")
    return {
        "privacy_policy_url": url,
        "request_form": form,
        "timeouts": {
            "connect_timeout_s": page.connect_timeout_s,
            "agent_join_timeout_s": page.agent_join_timeout_s,
            "end_grace_s": page.end_grace_s,
        },
        "warn_remaining_s": page.warn_remaining_s,
    }


def json_for_html(value: object) -> str:
    """JSON safe inside <script type="application/json">: no '<', '>' or '&' to close it."""
    text = json.dumps(value, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@dataclass(frozen=True)
class Bundle:
    index_html: str
    assets: dict[str, Path]  # file name under /assets/ -> file


def load_bundle(dist: Path, config_json: str) -> Bundle | None:
    """The built page, or None if `make web` has not run (the API keeps working)."""
    index = dist / "index.html"
    manifest = dist / "manifest.json"
    if not index.is_file() or not manifest.is_file():
        return None
    html = index.read_text(encoding="utf-8")
    if CONFIG_SLOT not in html:
        raise ConfigError(f"{index}: no {CONFIG_SLOT} slot; rebuild with make web")
    names = json.loads(manifest.read_text(encoding="utf-8")).values()
    assets = {}
    for url in names:
        name = str(url).removeprefix("/assets/")
        path = dist / "assets" / name
        if not path.is_file():
            raise ConfigError(f"{dist}: {path.name} is missing; rebuild with make web")
        assets[name] = path
    return Bundle(html.replace(CONFIG_SLOT, config_json), assets)


NOT_BUILT = """<!doctype html><html lang="en"><meta charset="utf-8"><title>Demo unavailable</title>
<p>The demo page has not been built on this server. Run <code>make web</code>, then reload.</p>
"""


def _stamp(dist: Path) -> int | None:
    try:
        return (dist / "manifest.json").stat().st_mtime_ns
    except OSError:
        return None


def web_router(settings: Settings, dist: Path = DIST_DIR) -> APIRouter:
    headers = security_headers(settings)
    form = request_form_config(
        load_request_rules(settings.policies_dir),
        load_policies(settings.policies_dir).retention.sales_requests_days,
    )
    config_json = json_for_html(page_config(settings, load_page_settings(), form))
    bundle = load_bundle(dist, config_json)
    if bundle is None:
        log.warning("demo page not built", extra={"dist": str(dist), "fix": "make web"})
    built_at = _stamp(dist)

    def current() -> Bundle | None:
        # `make web` while the server runs writes new hashed names: follow the rebuild
        # instead of pointing browsers at files that are gone (one stat per request).
        nonlocal bundle, built_at
        stamp = _stamp(dist)
        if stamp != built_at:
            bundle, built_at = load_bundle(dist, config_json), stamp
        return bundle

    router = APIRouter()

    @router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def index() -> Response:
        page = current()
        if page is None:
            return HTMLResponse(
                NOT_BUILT, status_code=503, headers={**headers, "Cache-Control": "no-store"}
            )
        # no-cache: the page is tiny and carries the config, which may change on redeploy.
        return HTMLResponse(page.index_html, headers={**headers, "Cache-Control": "no-cache"})

    @router.api_route("/assets/{name}", methods=["GET", "HEAD"], include_in_schema=False)
    async def asset(name: str, request: Request) -> Response:
        page = current()
        path = page.assets.get(name) if page else None
        if path is None:
            raise HTTPException(status_code=404)
        accepted = {
            part.split(";")[0].strip().lower()
            for part in request.headers.get("accept-encoding", "").split(",")
        }
        response_headers = {**headers, "Cache-Control": ASSET_CACHE, "Vary": "Accept-Encoding"}
        for encoding, suffix in ENCODINGS:
            compressed = path.with_name(path.name + suffix)
            if encoding in accepted and compressed.is_file():
                response_headers["Content-Encoding"] = encoding
                path = compressed
                break
        return FileResponse(
            path,
            media_type=MEDIA_TYPES.get(Path(name).suffix, "application/octet-stream"),
            headers=response_headers,
        )

    return router
