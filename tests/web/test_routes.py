"""The demo page's routes (web/routes.py) and its build: what the server sends, with which
headers, and what the bundle may load. In-process ASGI: no browser needed here."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from server.settings import ConfigError, Settings
from tests.sales.support import write_request_policies
from tests.support import ROOT
from tests.web.support import DIST, ensure_bundle
from web.routes import load_page_settings, web_router

LIVEKIT = "wss://media.example.test:7443"


def app_for(dist: Path = DIST, **settings: object) -> FastAPI:
    app = FastAPI()
    values: dict[str, object] = {"livekit_url": LIVEKIT, **settings}
    app.include_router(web_router(Settings(**values), dist))  # type: ignore[arg-type]
    return app


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://demo.test")


def csp(response: httpx.Response) -> dict[str, list[str]]:
    policy = response.headers["content-security-policy"]
    return {d.split()[0]: d.split()[1:] for d in (p.strip() for p in policy.split(";")) if d}


def test_bundle_is_built_and_references_only_our_origin() -> None:
    manifest = ensure_bundle()
    html = (DIST / "index.html").read_text()
    loaded = re.findall(r'<(?:script|link)\b[^>]*\b(?:src|href)="([^"]+)"', html)
    assert sorted(loaded) == sorted(manifest.values())
    for url in manifest.values():
        assert url.startswith("/assets/")
        assert (DIST / url.lstrip("/")).is_file()
    assert "{{config}}" in html
    # No source map or import pointing anywhere else.
    bundle = (DIST / manifest["app.js"].lstrip("/")).read_text()
    assert "sourceMappingURL" not in bundle
    assert "import(" not in bundle


def test_npm_lockfile_is_pinned_without_registry_urls() -> None:
    package = json.loads((ROOT / "web" / "package.json").read_text())
    for deps in (package["dependencies"], package["devDependencies"]):
        for name, version in deps.items():
            assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name} {version} is not exact"
    lock = (ROOT / "web" / "package-lock.json").read_text()
    assert '"resolved"' not in lock
    assert "registry" not in lock  # funding links may stay; no registry address may


async def test_page_headers_allow_only_self_and_livekit() -> None:
    ensure_bundle()
    async with client(app_for()) as http:
        response = await http.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "set-cookie" not in response.headers
    policy = csp(response)
    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["connect-src"] == ["'self'", LIVEKIT, "https://media.example.test:7443"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "microphone=(self)" in response.headers["permissions-policy"]
    assert response.headers["cache-control"] == "no-cache"
    assert "strict-transport-security" not in response.headers  # development


async def test_config_is_injected_as_inert_json() -> None:
    ensure_bundle()
    tricky = "https://example.test/privacy?x=</script><script>alert(1)</script>&y=1"
    async with client(app_for(privacy_policy_url=tricky)) as http:
        html = (await http.get("/")).text
    block = re.search(r'<script id="ocf-config" type="application/json">(.*?)</script>', html)
    assert block is not None
    assert "<" not in block.group(1)
    config = json.loads(block.group(1))
    assert config["privacy_policy_url"] == tricky
    page = load_page_settings()
    assert config["timeouts"] == {
        "connect_timeout_s": page.connect_timeout_s,
        "agent_join_timeout_s": page.agent_join_timeout_s,
        "end_grace_s": page.end_grace_s,
    }
    assert config["warn_remaining_s"] == page.warn_remaining_s
    # The request form's rules are the server's own (policies/requests.yaml, retention.yaml).
    assert config["request_form"] == {
        "fields": {
            "name": {"min": 2, "max": 100},
            "email": {"min": 6, "max": 254},
            "phone": {"min": 6, "max": 32},
            "company": {"min": 1, "max": 120},
            "message": {"min": 1, "max": 2000},
        },
        "languages": ["fr", "en"],
        "per_visitor_per_day": 3,
        "retention_days": 365,
    }


async def test_request_form_rules_follow_the_deployment_policies(tmp_path: Path) -> None:
    ensure_bundle()
    policies = write_request_policies(
        tmp_path, limits={"per_visitor_per_day": 2}, fields={"name": {"min": 3, "max": 60}}
    )
    (policies / "retention.yaml").write_text(
        (policies / "retention.yaml")
        .read_text()
        .replace("sales_requests_days: 365", "sales_requests_days: 180")
    )
    async with client(app_for(policies_dir=policies)) as http:
        html = (await http.get("/")).text
    block = re.search(r'<script id="ocf-config" type="application/json">(.*?)</script>', html)
    assert block is not None
    form = json.loads(block.group(1))["request_form"]
    assert form["fields"]["name"] == {"min": 3, "max": 60}
    assert form["per_visitor_per_day"] == 2
    assert form["retention_days"] == 180


async def test_assets_are_served_compressed_and_cached_forever() -> None:
    manifest = ensure_bundle()
    path = manifest["app.js"]
    raw = (DIST / path.lstrip("/")).read_bytes()
    async with client(app_for()) as http:
        zipped = await http.get(path, headers={"Accept-Encoding": "gzip"})
        plain = await http.get(path, headers={"Accept-Encoding": "identity"})
        missing = await http.get("/assets/app-000000000000.js")
        sideways = await http.get("/assets/..%2Fmanifest.json")
    assert zipped.status_code == 200
    assert zipped.headers["content-encoding"] == "gzip"
    # httpx undoes Content-Encoding: equal bytes prove the gzip copy is this very bundle.
    assert zipped.content == raw
    assert int(zipped.headers["content-length"]) < len(raw) / 2
    assert plain.content == raw
    assert "content-encoding" not in plain.headers
    for response in (zipped, plain):
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert response.headers["content-type"] == "text/javascript; charset=utf-8"
        assert "set-cookie" not in response.headers
        assert csp(response)["default-src"] == ["'none'"]
    assert missing.status_code == 404
    assert sideways.status_code == 404


async def test_production_and_embedding_headers() -> None:
    ensure_bundle()
    app = app_for(
        environment="production",
        allowed_origins="https://onecallflow.com",
        livekit_api_key="k" * 10,
        livekit_api_secret="s" * 40,
    )
    async with client(app) as http:
        response = await http.get("/")
    assert csp(response)["frame-ancestors"] == ["https://onecallflow.com"]
    assert response.headers["strict-transport-security"].startswith("max-age=31536000")


def test_refuses_a_privacy_url_that_is_not_a_web_address() -> None:
    with pytest.raises(ConfigError, match="PRIVACY_POLICY_URL"):
        app_for(privacy_policy_url="javascript:alert(1)")


def test_refuses_a_livekit_url_that_is_not_a_websocket() -> None:
    with pytest.raises(ConfigError, match="LIVEKIT_URL"):
        app_for(livekit_url="127.0.0.1:7880")


async def test_unbuilt_page_says_how_to_build_and_is_picked_up_once_built(
    tmp_path: Path,
) -> None:
    ensure_bundle()
    dist = tmp_path / "dist"
    app = app_for(dist)
    async with client(app) as http:
        before = await http.get("/")
        assert before.status_code == 503
        assert "make web" in before.text
        assert csp(before)["default-src"] == ["'none'"]
        shutil.copytree(DIST, dist)
        after = await http.get("/")
        assert after.status_code == 200
        assert 'id="ocf-config"' in after.text
