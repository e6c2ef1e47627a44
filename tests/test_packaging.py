"""A non-editable install of the project works on its own (issue 12: `pip install .`).

The project is installed with pip from a copy of this tree into a directory of its own,
then run from a directory outside the repository with only that directory on the path
(`-P`: neither the working directory nor the script's is put first), so neither the source
tree nor the virtualenv's editable install can answer an import. What a user would run
must work: `python -m agent --help`, `python -m ops --help`, and the token server's app
(`token_server.app`, what `uvicorn token_server:app` loads), whose modules must all come
from the install and which serves its API document and the demo page from the installed
package data. Nothing here needs Redis: the app connects on its first command.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agents_catalog import load_catalog
from server.api_document import load_document
from tests.support import ROOT
from tests.web.support import DIST, ensure_bundle

# What a copy of the tree for pip leaves out: VCS, local tools and state, build output of
# earlier installs, caches, secrets (web/dist, git-ignored, stays: it is package data).
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", ".tools", ".run", ".env", "node_modules", "test-output", "build",
    "*.egg-info", "__pycache__", "*.pyc", ".mypy_cache", ".ruff_cache", ".pytest_cache",
)  # fmt: skip
OUR_TOP_LEVEL = {
    "agent", "agents_catalog", "local_livekit", "ops", "policies", "sales", "server",
    "sessions", "web", "token_server",
}  # fmt: skip

# Run inside the install: prints what the test checks, as JSON.
PROBE = r"""
import asyncio, json, logging, sys

import httpx
from fastapi import FastAPI

site, ours, asset_urls = sys.argv[1], set(sys.argv[2].split(",")), sys.argv[3:]
handlers = list(logging.getLogger().handlers)
import token_server
import server.app, server.services, server.middleware, server.token_endpoint
import agent, ops

report = {
    "built_on_import": "app" in vars(token_server),
    "logging_touched_on_import": logging.getLogger().handlers != handlers,
}
app = token_server.app
report["is_fastapi"] = isinstance(app, FastAPI)
report["built_once"] = token_server.app is app
report["module_files"] = {
    name: getattr(module, "__file__", None)
    for name, module in sorted(sys.modules.items())
    if name.partition(".")[0] in ours
}


async def fetch():
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://demo.test") as client:
        document = await client.get("/openapi.json")
        page = await client.get("/")
        report["document"] = [document.status_code, document.json()]
        report["page"] = [page.status_code, page.text]
        report["assets"] = {}
        for url in asset_urls:
            answer = await client.get(url)
            report["assets"][url] = [answer.status_code, answer.content.hex()]


asyncio.run(fetch())
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project pip-installed (not editable) into a directory of its own; returns it."""
    ensure_bundle()  # the page's bundle, so the install carries it as package data
    base = tmp_path_factory.mktemp("install")
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    site = base / "site"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(site), str(source)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, (
        "pip install . failed"
        + (
            " (this virtualenv cannot build a wheel offline: its setuptools has no"
            " bdist_wheel; `wheel` or setuptools>=70.1 in .venv provides one)"
            if "bdist_wheel" in result.stderr + result.stdout
            else ""
        )
        + f":\n{result.stdout}\n{result.stderr}"
    )
    (base / "elsewhere").mkdir()
    return site


def run_outside(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -P <args>` from outside the repository with only the install on the path."""
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONSAFEPATH": "1"}
    return subprocess.run(
        [sys.executable, "-P", *args],
        cwd=site.parent / "elsewhere", env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize("package", ["agent", "ops"])
def test_the_command_lines_run_from_the_install(install: Path, package: str):
    result = run_outside(install, "-m", package, "--help")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"python -m {package}" in result.stdout


def test_the_token_server_app_is_built_from_the_install(install: Path):
    manifest = ensure_bundle()
    result = run_outside(install, "-c", PROBE, str(install), ",".join(OUR_TOP_LEVEL),
                         *manifest.values())  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)

    # Importing token_server (and the server's modules) builds nothing, touches no logging.
    assert report["built_on_import"] is False
    assert report["logging_touched_on_import"] is False
    assert report["is_fastapi"] and report["built_once"]
    # Every module of ours that was loaded is the installed one: neither the source tree
    # nor the editable install in the virtualenv answered.
    files = report["module_files"]
    assert {"token_server", "server.app", "server.services", "server.api_document",
            "web.routes", "ops.install", "agent", "ops"} <= files.keys()  # fmt: skip
    elsewhere = {name: file for name, file in files.items() if file is None
                 or not Path(file).resolve().is_relative_to(install.resolve())}  # fmt: skip
    assert not elsewhere, f"not from the install: {elsewhere}"

    # The API document (server/openapi.yaml, package data) is the source tree's.
    status, document = report["document"]
    assert status == 200
    assert document == load_document([p.id for p in load_catalog()])
    # The demo page and its bundle (web/dist, package data) are served from the install.
    status, page = report["page"]
    assert status == 200, page
    assert manifest["app.js"] in page and "{{config}}" not in page
    for url, (status, body) in report["assets"].items():
        source = DIST / "assets" / url.removeprefix("/assets/")
        assert status == 200, url
        assert hashlib.sha256(bytes.fromhex(body)).digest() == (
            hashlib.sha256(source.read_bytes()).digest()
        ), url
