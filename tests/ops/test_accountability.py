"""Ops accountability: every ops action (lookup, erase, block, unblock, showcase change,
failed sign-in) leaves an audit-log entry (what, when, through which surface, which
credential by name: never a secret, never an address) that expires within the policy;
`python -m ops audit-log` and `GET /ops/audit-log` show them. /metrics has its own
read-only credential. Failed sign-ins on the ops surface are limited per client
pseudonym and for everyone, in Redis with TTLs. Real token server, real Redis, the CLI in
subprocesses."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from redisdb import keys
from tests.ops.support import (
    CHROME_UA,
    HASH_SECRET,
    METRICS_TOKEN,
    OPS_TOKEN,
    auth,
    ops_json,
    request_token,
    run_ops,
    running_ops_stack,
    write_ops_policies,
)
from tests.server.support import away_from_bucket_edge, dump_redis, session_record
from tests.support import ROOT, ServerProcess

AUDIT_DAYS = 20
PER_CLIENT, GLOBAL = 3, 5
WINDOW_S = 86_400  # one window for the whole test (it keeps away from the edge)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, ...]]:
    directory = tmp_path_factory.mktemp("policies")
    with running_ops_stack(write_ops_policies(directory, audit_log={"days": AUDIT_DAYS})) as s:
        yield s


@pytest.fixture
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, ...]]:
    signin = {"window_s": WINDOW_S, "per_client": PER_CLIENT, "global": GLOBAL}
    directory = tmp_path_factory.mktemp("policies")
    with running_ops_stack(write_ops_policies(directory, signin=signin)) as s:
        yield s


def entries(r: redis.Redis) -> list[tuple[bytes, int, dict[str, Any]]]:
    return [
        (k.name, k.ttl, json.loads(k.contents[0]))
        for k in dump_redis(r)
        if keys.kind_of(k.name.decode()) == keys.OPS_LOG
    ]


def env_of(stack: Any) -> dict[str, str]:
    return dict(stack[2])


def post(base: str, path: str, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return httpx.post(base + path, json=body, headers=auth(), timeout=15, **kwargs)


def test_every_ops_action_leaves_an_entry(stack: Any) -> None:
    server, redis_server, env = stack
    base, r = server.base_url, redis_server.client()
    addresses = ["192.0.2.61", "192.0.2.62"]
    visitors = []
    for address in addresses:
        response = request_token(base, address)
        visitors.append(session_record(r, response.json()["session_id"])["visitor"])
    cli, api = visitors

    # The CLI...
    ops_json(env, "block", cli, "--for", "1d", "--reason", "cli test")
    ops_json(env, "unblock", cli)
    ops_json(env, "lookup", "--ip", addresses[0])
    ops_json(env, "showcase", "set", "after-hours-en", "--order", "9")
    ops_json(env, "showcase", "reset", "after-hours-en")
    ops_json(env, "erase", "--ip", addresses[0])
    # ...the API...
    assert post(base, "/ops/blocks", {"visitor": api, "reason": "api test"}).status_code == 201
    assert httpx.delete(f"{base}/ops/blocks/{api}", headers=auth(), timeout=15).is_success
    assert post(base, "/ops/lookup", {"ip": addresses[1]}).is_success
    patched = httpx.patch(
        f"{base}/ops/showcase/after-hours-en", json={"featured": True}, headers=auth(),
        timeout=15,
    )  # fmt: skip
    assert patched.is_success
    assert httpx.delete(f"{base}/ops/showcase", headers=auth(), timeout=15).is_success
    assert post(base, "/ops/erase", {"ip": addresses[1]}).is_success
    # ...the page, and a failed sign-in there.
    for action in ("block", "unblock"):
        form = {"token": OPS_TOKEN, "action": action, "visitor": api}
        assert httpx.post(base + "/ops", data=form, timeout=15).status_code == 200
    assert httpx.post(base + "/ops", data={"token": "guess"}, timeout=15).status_code == 401

    stored = entries(r)
    seen = [(e["action"], e["via"], e["credential"], e["outcome"]) for _, _, e in stored]
    user = f"cli:{getpass.getuser()}"
    assert sorted(seen) == sorted(
        [
            ("block", "cli", user, "done"), ("unblock", "cli", user, "done"),
            ("lookup", "cli", user, "done"), ("showcase_set", "cli", user, "done"),
            ("showcase_reset", "cli", user, "done"), ("erase", "cli", user, "done"),
            ("block", "api", "OPS_TOKEN", "done"), ("unblock", "api", "OPS_TOKEN", "done"),
            ("lookup", "api", "OPS_TOKEN", "done"), ("showcase_set", "api", "OPS_TOKEN", "done"),
            ("showcase_reset", "api", "OPS_TOKEN", "done"), ("erase", "api", "OPS_TOKEN", "done"),
            ("block", "page", "OPS_TOKEN", "done"), ("unblock", "page", "OPS_TOKEN", "done"),
            ("signin_failed", "page", "unknown", "refused"),
            # Each dashboard shown lists the sales requests: a read of personal data.
            ("requests_list", "page", "OPS_TOKEN", "done"),
            ("requests_list", "page", "OPS_TOKEN", "done"),
        ]
    )  # fmt: skip
    secrets = [OPS_TOKEN, METRICS_TOKEN, HASH_SECRET, "guess", *addresses, "192.0.2."]
    for name, ttl, entry in stored:
        assert 0 < ttl <= AUDIT_DAYS * 86_400, name
        blob = name + json.dumps(entry).encode()
        for secret in secrets:
            assert secret.encode() not in blob, (secret, entry)
    erase_entry = next(e for _, _, e in stored if e["action"] == "erase" and e["via"] == "cli")
    assert erase_entry["detail"]["sessions"] == 1
    block_entry = next(e for _, _, e in stored if e["action"] == "block" and e["via"] == "cli")
    assert block_entry["detail"] == {"visitor": cli, "for_s": 86_400, "reason": "cli test"}

    # Shown newest first by the CLI and the API alike; filtered by action.
    shown = ops_json(env, "audit-log")
    assert shown["count"] == len(stored)
    times = [e["at"] for e in shown["entries"]]
    assert times == sorted(times, reverse=True)
    assert {e["action"] for e in ops_json(env, "audit-log", "--action", "erase")["entries"]} == {
        "erase"
    }
    over_http = httpx.get(base + "/ops/audit-log", headers=auth(), timeout=15).json()
    assert over_http == shown
    text = run_ops(env, "audit-log")
    assert text.returncode == 0 and "signin_failed" in text.stdout and user in text.stdout
    assert run_ops(env, "audit-log", "--action", "nothing").returncode == 2
    # The retention check knows the new kinds and finds them within policy.
    audit = ops_json(env, "audit")
    assert audit["ok"], audit["breaches"]
    assert audit["kinds"]["opslog"]["policy_max_s"] == AUDIT_DAYS * 86_400
    assert {"opslog", "pepper", "signin"} <= set(audit["kinds"])


def test_metrics_has_its_own_read_only_credential(stack: Any) -> None:
    server, _, _ = stack
    base = server.base_url
    scrape = httpx.get(base + "/metrics", headers=auth(METRICS_TOKEN), timeout=15)
    assert scrape.status_code == 200 and "ocf_tokens_issued" in scrape.text
    # The ops token does not scrape; the metrics token opens nothing of ops.
    assert httpx.get(base + "/metrics", headers=auth(), timeout=15).status_code == 401
    for method, path in (("GET", "/ops/sessions"), ("GET", "/ops/audit-log"),
                         ("POST", "/ops/erase")):  # fmt: skip
        response = httpx.request(
            method, base + path, headers=auth(METRICS_TOKEN), json={"ip": "192.0.2.9"},
            timeout=15,
        )  # fmt: skip
        assert response.status_code == 401, path
    assert httpx.get(base + "/ops", headers=auth(METRICS_TOKEN), timeout=15).status_code == 401
    failed = ops_json(env_of(stack), "audit-log", "--action", "signin_failed")["entries"]
    assert {(e["via"], e["credential"]) for e in failed} >= {
        ("metrics", "OPS_TOKEN"), ("api", "METRICS_TOKEN"), ("page", "METRICS_TOKEN"),
    }  # fmt: skip


def test_one_credential_for_both_is_refused_at_start(stack: Any) -> None:
    env = {**env_of(stack), "METRICS_TOKEN": OPS_TOKEN, "PORT": "1"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "token_server.py")], cwd=ROOT, capture_output=True,
        text=True, timeout=60, env={**os.environ, **env}, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "METRICS_TOKEN must differ from OPS_TOKEN" in done.stderr
    assert OPS_TOKEN not in done.stderr + done.stdout


def test_metrics_off_without_its_token(stack: Any) -> None:
    server = ServerProcess(env={**env_of(stack), "METRICS_TOKEN": ""}).start()
    try:
        for headers in ({}, auth(), auth(METRICS_TOKEN)):
            response = httpx.get(server.base_url + "/metrics", headers=headers, timeout=15)
            assert response.status_code == 404
    finally:
        server.stop()


def attempt(base: str, client: str, token: str, path: str = "/ops/blocks") -> httpx.Response:
    return httpx.get(
        base + path,
        headers={**auth(token), "X-Forwarded-For": client, "User-Agent": CHROME_UA},
        timeout=15,
    )


def test_failed_signins_are_limited_per_client_and_for_everyone(limited: Any) -> None:
    server, redis_server, env = limited
    base, r = server.base_url, redis_server.client()
    away_from_bucket_edge(r, WINDOW_S, margin_s=60)
    # One client guesses: PER_CLIENT wrong answers, then 429 whatever it sends, even
    # the right token (it is not even compared).
    codes = [attempt(base, "192.0.2.71", f"guess-{i}").status_code for i in range(PER_CLIENT)]
    assert codes == [401] * PER_CLIENT
    for token in ("guess-again", OPS_TOKEN):
        limited_response = attempt(base, "192.0.2.71", token)
        assert limited_response.status_code == 429
        assert limited_response.json()["error"] == "too_many_attempts"
        assert 0 < int(limited_response.headers["retry-after"]) <= WINDOW_S
    page = httpx.post(
        base + "/ops", data={"token": OPS_TOKEN},
        headers={"X-Forwarded-For": "192.0.2.71"}, timeout=15,
    )  # fmt: skip
    assert page.status_code == 429 and "Too many failed sign-ins" in page.text
    # Its refused attempts did not use up everyone's allowance; the right token from
    # elsewhere works and gives its attempt back.
    assert attempt(base, "192.0.2.72", OPS_TOKEN).status_code == 200
    assert attempt(base, "192.0.2.72", OPS_TOKEN, "/ops/sessions").status_code == 200
    # Other clients guess until everyone's allowance is used: then nobody gets in.
    left = GLOBAL - PER_CLIENT
    assert [attempt(base, "192.0.2.73", f"g{i}").status_code for i in range(left)] == [401] * left
    assert attempt(base, "192.0.2.74", OPS_TOKEN).status_code == 429
    assert httpx.get(base + "/metrics", headers={**auth(METRICS_TOKEN),
                     "X-Forwarded-For": "192.0.2.75"}, timeout=15).status_code == 429  # fmt: skip
    # Only the attempts really compared are in the audit log.
    failed = ops_json(env, "audit-log", "--action", "signin_failed")["entries"]
    assert len(failed) == GLOBAL
    # The counts are keyed by pseudonyms and the window, never an address, with a TTL.
    counters = [k for k in dump_redis(r) if keys.kind_of(k.name.decode()) == keys.SIGNIN]
    assert len(counters) == 3  # two clients' counts and everyone's
    for key in counters:
        assert 0 < key.ttl <= WINDOW_S + 60
        assert b"192.0.2." not in key.blob()
    assert int(r.get(keys.signin_failures("all", int(r.time()[0]) // WINDOW_S)) or 0) == GLOBAL
    # The CLI does not go through the web sign-in: ops can still act.
    assert ops_json(env, "blocks") == {"blocks": []}
