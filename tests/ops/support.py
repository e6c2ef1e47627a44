"""Helpers for the ops tests: the CLI in a subprocess, signed LiveKit webhooks, tokens
requested from a given address (through a trusted proxy header)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml
from livekit import api

from tests.server.support import API_KEY, API_SECRET, roomy_caps, settings_env
from tests.support import ROOT, RedisServer, ServerProcess, write_policies

OPS_TOKEN = "ops-token-for-tests-0123456789-abcdefghijkl"
METRICS_TOKEN = "metrics-token-for-tests-9876543210-zyxwvu"
HASH_SECRET = "visitor-hash-secret-for-tests-0123456789abcdef"
CHROME_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)


def ops_env(redis_url: str, **extra: str) -> dict[str, str]:
    """Environment shared by the token server and the ops CLI in a test."""
    return settings_env(
        redis_url,
        OPS_TOKEN=OPS_TOKEN,
        METRICS_TOKEN=METRICS_TOKEN,
        VISITOR_HASH_SECRET=HASH_SECRET,
        TRUSTED_PROXIES="127.0.0.1/32",
        **extra,
    )


def run_ops(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@contextlib.contextmanager
def running_ops_stack(
    policies_dir: Path | None = None, **extra: str
) -> Iterator[tuple[ServerProcess, RedisServer, dict[str, str]]]:
    """A Redis of its own and a token server on it (POLICIES_DIR: the one given, else
    write_ops_policies' defaults); the environment is the one the CLI needs too."""
    server_redis = RedisServer().start()
    try:
        if policies_dir is None:
            policies_dir = write_ops_policies(Path(tempfile.mkdtemp(prefix="ocf-ops-policies-")))
        extra["POLICIES_DIR"] = str(policies_dir)
        env = ops_env(server_redis.url, **extra)
        server = ServerProcess(env=env).start()
        try:
            yield server, server_redis, env
        finally:
            server.stop()
    finally:
        server_redis.stop()


def write_ops_policies(directory: Path, **sections: dict[str, Any]) -> Path:
    """The shipped policies, with sections of ops.yaml replaced in part (e.g.
    `auto_block={"refusals_per_day": 4}`); retention as shipped, limits too but for the
    unjoined-token caps and prefix aggregates (roomy_caps): ops tests give tokens to many
    neighbouring documentation addresses and never join with them."""
    write_policies(directory, limits=roomy_caps())
    rules = yaml.safe_load((ROOT / "policies" / "ops.yaml").read_text())
    for name, values in sections.items():
        rules[name].update(values)
    (directory / "ops.yaml").write_text(yaml.safe_dump(rules))
    return directory


def ops_json(env: dict[str, str], *args: str) -> Any:
    done = run_ops(env, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def auth(token: str = OPS_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def request_token(
    base_url: str, ip: str, persona: str = "agence-immo-fr", ua: str = CHROME_UA
) -> httpx.Response:
    return httpx.post(
        base_url + "/api/token",
        json={"agent": persona},
        headers={"X-Forwarded-For": ip, "User-Agent": ua},
        timeout=10,
    )


def signed_event(event: dict[str, Any], secret: str = API_SECRET) -> tuple[bytes, str]:
    """A webhook body and the Authorization LiveKit would send: a JWT signed with the API
    secret whose `sha256` claim is the body's digest (what WebhookReceiver checks)."""
    body = json.dumps(event).encode()
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    token = (
        api.AccessToken(API_KEY, secret).with_sha256(digest).with_ttl(timedelta(minutes=5)).to_jwt()
    )
    return body, token


def post_event(base_url: str, event: dict[str, Any], secret: str = API_SECRET) -> httpx.Response:
    body, token = signed_event(event, secret)
    return httpx.post(
        base_url + "/livekit/webhook",
        content=body,
        headers={"Authorization": token, "Content-Type": "application/webhook+json"},
        timeout=10,
    )


def room_finished(session_id: str, at: float | None = None) -> dict[str, Any]:
    return {
        "event": "room_finished",
        "id": f"EV_{session_id}_rf",
        "createdAt": str(int(at or time.time())),
        "room": {"sid": "RM_test", "name": f"demo-{session_id}"},
    }


def participant_left(session_id: str, kind: str, at: float | None = None) -> dict[str, Any]:
    return {
        "event": "participant_left",
        "id": f"EV_{session_id}_{kind}",
        "createdAt": str(int(at or time.time())),
        "room": {"sid": "RM_test", "name": f"demo-{session_id}"},
        "participant": {"sid": "PA_x", "identity": f"{kind}-1", "kind": kind.upper()},
    }
