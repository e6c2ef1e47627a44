"""The ops API (/ops/*), page (/ops) and /metrics over HTTP on a real token server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from redisdb import keys
from tests.ops.support import (
    METRICS_TOKEN,
    OPS_TOKEN,
    auth,
    ops_json,
    request_token,
    running_ops_stack,
    write_ops_policies,
)
from tests.server.support import dump_redis, session_record
from tests.support import ServerProcess

API_ROUTES = [
    ("GET", "/ops/sessions"), ("GET", "/ops/stats"), ("GET", "/ops/top"),
    ("GET", "/ops/blocks"), ("POST", "/ops/blocks"), ("DELETE", "/ops/blocks/" + "ab" * 16),
    ("POST", "/ops/lookup"), ("POST", "/ops/erase"), ("GET", "/ops/audit"),
    ("GET", "/ops/showcase"), ("PATCH", "/ops/showcase/agence-immo-fr"),
    ("DELETE", "/ops/showcase/agence-immo-fr"), ("DELETE", "/ops/showcase"),
    ("GET", "/ops/audit-log"),
]  # fmt: skip


VISITOR = "ab" * 16
TEXT_PLAIN = {"content-type": "text/plain"}
JSON_TYPE = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, ...]]:
    # Room for every wrong token these tests send from one client (the limit itself:
    # tests/ops/test_accountability.py).
    directory = write_ops_policies(
        tmp_path_factory.mktemp("policies"), signin={"per_client": 1000, "global": 1000}
    )
    with running_ops_stack(directory) as s:
        yield s


@pytest.fixture(scope="module")
def ops_off(stack: Any) -> Iterator[ServerProcess]:
    """The same app with no OPS_TOKEN configured."""
    env = {**stack[2], "OPS_TOKEN": ""}
    server = ServerProcess(env=env).start()
    yield server
    server.stop()


def call(base: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, base + path, timeout=15, **kwargs)


def but_signins(r: Any) -> list[tuple[bytes, tuple[bytes, ...]]]:
    """Redis minus what a failed sign-in leaves: its count and its audit-log entry (and
    the period's salt, if no visitor made it yet: the count is keyed by a pseudonym)."""
    return sorted(
        (k.name, k.contents)
        for k in dump_redis(r)
        if keys.kind_of(k.name.decode()) not in (keys.SIGNIN, keys.OPS_LOG, keys.SALT)
    )


def signins_failed(r: Any) -> int:
    return sum(
        b'"signin_failed"' in k.contents[0]
        for k in dump_redis(r)
        if keys.kind_of(k.name.decode()) == keys.OPS_LOG
    )


@pytest.mark.parametrize(("method", "path"), [*API_ROUTES, ("GET", "/metrics")])
def test_auth_failures(stack: Any, method: str, path: str) -> None:
    base = stack[0].base_url
    r = stack[1].client()
    before, failed_before = but_signins(r), signins_failed(r)
    wrong = METRICS_TOKEN if path == "/metrics" else OPS_TOKEN
    for headers in (
        {},  # missing
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": ""},  # empty
        {"Authorization": "Bearer"},
        {"Authorization": f"Basic {wrong}"},  # right secret, wrong scheme
        {"Authorization": f"Bearer {wrong}x"},
    ):
        response = call(base, method, path, headers=headers, json={"ip": "192.0.2.1"})
        assert response.status_code == 401, (headers, response.text)
        assert response.json()["error"] == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")
    # Nothing changed but the record of the two wrong tokens presented.
    assert but_signins(r) == before
    assert signins_failed(r) == failed_before + 2


@pytest.mark.parametrize(("method", "path"), [*API_ROUTES, ("GET", "/ops"), ("POST", "/ops")])
def test_ops_off_without_token(ops_off: ServerProcess, method: str, path: str) -> None:
    for headers in ({}, {"Authorization": ""}, auth()):
        response = call(ops_off.base_url, method, path, headers=headers, json={})
        assert response.status_code == 404, response.text


def test_api_matches_cli(stack: Any) -> None:
    server, _, env = stack
    base = server.base_url
    assert request_token(base, "192.0.2.10").status_code == 201
    for path, args in (
        ("/ops/sessions", ("sessions",)),
        ("/ops/stats?by=day&count=2", ("stats", "--by", "day", "--count", "2")),
        ("/ops/top", ("top",)),
        ("/ops/blocks", ("blocks",)),
        ("/ops/audit", ("audit",)),
        ("/ops/showcase", ("showcase", "list")),
    ):
        response = call(base, "GET", path, headers=auth())
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        api, cli = response.json(), ops_json(env, *args)
        assert set(api) == set(cli), path
        if path in ("/ops/showcase", "/ops/blocks"):
            assert api == cli
    assert call(base, "GET", "/ops/audit", headers=auth()).json()["ok"] is True


def test_block_lookup_erase_over_http(stack: Any) -> None:
    server, redis_server, _ = stack
    base, r = server.base_url, redis_server.client()
    response = request_token(base, "192.0.2.20")
    session_id = response.json()["session_id"]
    visitor = session_record(r, session_id)["visitor"]

    created = call(base, "POST", "/ops/blocks", headers=auth(),
                   json={"visitor": visitor, "for": "3h", "reason": "api test"})  # fmt: skip
    assert created.status_code == 201 and created.json()["blocked"]["reason"] == "api test"
    assert request_token(base, "192.0.2.20").json()["error"] == "blocked"
    blocks = call(base, "GET", "/ops/blocks", headers=auth()).json()["blocks"]
    assert visitor in {b["visitor"] for b in blocks}
    removed = call(base, "DELETE", f"/ops/blocks/{visitor}", headers=auth())
    assert removed.json() == {"visitor": visitor, "unblocked": True}

    found = call(base, "POST", "/ops/lookup", headers=auth(), json={"ip": "192.0.2.20"}).json()
    assert [s["session_id"] for s in found["sessions"]] == [session_id]
    erased = call(base, "POST", "/ops/erase", headers=auth(), json={"ip": "192.0.2.20"}).json()
    assert erased["deleted"]["sessions"] == 1 and erased["remaining"]["sessions"] == 0
    assert r.exists(keys.session(session_id)) == 0


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("POST", "/ops/blocks", {"json": {"visitor": "nope", "reason": "x"}}, 422),
        ("POST", "/ops/blocks", {"json": {"visitor": VISITOR, "reason": "x", "for": "400d"}}, 422),
        ("POST", "/ops/blocks", {"json": {"visitor": "ab" * 16}}, 422),
        ("POST", "/ops/blocks", {"content": b"visitor=x", "headers": TEXT_PLAIN}, 415),
        ("POST", "/ops/blocks", {"content": b"{bad json", "headers": JSON_TYPE}, 422),
        ("POST", "/ops/lookup", {"json": {"ip": "999.1.1.1"}}, 422),
        ("POST", "/ops/erase", {"json": {"ip": 12}}, 422),
        ("POST", "/ops/erase", {"json": ["192.0.2.1"]}, 422),
        ("PATCH", "/ops/showcase/agence-immo-fr", {"json": {"order": "first"}}, 422),
        ("PATCH", "/ops/showcase/agence-immo-fr", {"json": {"enabled": 1}}, 422),
        ("PATCH", "/ops/showcase/agence-immo-fr", {"json": {"colour": "red"}}, 422),
        ("PATCH", "/ops/showcase/nobody", {"json": {"enabled": False}}, 422),
        ("GET", "/ops/sessions?status=weird", {}, 422),
        ("GET", "/ops/stats?by=week", {}, 422),
        ("GET", "/ops/top?window=0h", {}, 422),
        ("GET", "/ops/top?limit=many", {}, 422),
        ("GET", "/ops/sessions?limit=0", {}, 422),
        ("GET", "/ops/stats?count=-1", {}, 422),
    ],
)  # fmt: skip
def test_bad_input_changes_nothing(
    stack: Any, method: str, path: str, kwargs: dict[str, Any], status: int
) -> None:
    server, redis_server, _ = stack
    r = redis_server.client()
    before = sorted(
        (k.name, k.contents) for k in dump_redis(r) if not k.name.startswith(b"{ocf}:stats")
    )
    headers = {**auth(), **kwargs.pop("headers", {})}
    response = call(server.base_url, method, path, headers=headers, **kwargs)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error", "message"}
    after = sorted(
        (k.name, k.contents) for k in dump_redis(r) if not k.name.startswith(b"{ocf}:stats")
    )
    assert after == before


def agent_ids(base: str) -> list[str]:
    return [a["id"] for a in httpx.get(base + "/api/agents", timeout=10).json()["agents"]]


def test_showcase_override_without_restart(stack: Any) -> None:
    server, _, _ = stack
    base = server.base_url
    default = agent_ids(base)
    assert default == ["agence-immo-fr", "realty-desk-en", "gestion-incidents-fr", "after-hours-en"]
    try:
        moved = call(base, "PATCH", "/ops/showcase/after-hours-en", headers=auth(),
                     json={"order": 1, "featured": True})  # fmt: skip
        assert moved.status_code == 200 and moved.json()["persona"]["order"] == 1
        hidden = call(base, "PATCH", "/ops/showcase/agence-immo-fr", headers=auth(),
                      json={"enabled": False})  # fmt: skip
        assert hidden.json()["persona"]["enabled"] is False
        # Readers keep the override for showcase.cache_s (2 s): it shows within that.
        from tests.support import wait_until

        wait_until(lambda: agent_ids(base)[0] == "after-hours-en", timeout=5)
        assert agent_ids(base) == ["after-hours-en", "realty-desk-en", "gestion-incidents-fr"]
        card = httpx.get(base + "/api/agents", timeout=10).json()["agents"][0]
        assert card["featured"] is True and card["order"] == 1
        refused = request_token(base, "192.0.2.30", persona="agence-immo-fr")
        assert refused.status_code == 404 and refused.json()["error"] == "unknown_agent"
        assert request_token(base, "192.0.2.31", persona="after-hours-en").status_code == 201
    finally:
        assert call(base, "DELETE", "/ops/showcase", headers=auth()).status_code == 200
    wait_until(lambda: agent_ids(base) == default, timeout=5)
    assert request_token(base, "192.0.2.30", persona="agence-immo-fr").status_code == 201


def test_metrics_parse_and_hold_no_pseudonym(stack: Any) -> None:
    server, redis_server, _ = stack
    base, r = server.base_url, redis_server.client()
    assert request_token(base, "192.0.2.40", persona="realty-desk-en").status_code == 201
    assert request_token(base, "192.0.2.40", persona="realty-desk-en").status_code == 429
    response = call(base, "GET", "/metrics", headers=auth(METRICS_TOKEN))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    issued = {s.labels["persona"]: s.value for s in families["ocf_tokens_issued"].samples
              if s.name.endswith("_total")}  # fmt: skip
    assert issued["realty-desk-en"] >= 1
    refusals = {s.labels["reason"]: s.value for s in families["ocf_token_refusals"].samples
                if s.name.endswith("_total")}  # fmt: skip
    assert refusals["visitor_concurrent"] >= 1
    assert families["ocf_active_sessions"].samples[0].value >= 1
    assert families["ocf_minutes_used_today"].samples[0].value >= 5
    assert families["ocf_minutes_ceiling_per_day"].samples[0].value == 900
    assert "ocf_redis_errors" in families
    routes = {s.labels["route"] for s in families["ocf_http_request_duration_seconds"].samples}
    assert "/api/token" in routes

    # Nothing that names a visitor or a session: pseudonyms, session ids, addresses.
    secrets: set[str] = {"192.0.2.40"}
    for key in r.scan_iter(match=keys.pattern(keys.SESSION)):
        record = {k.decode(): v.decode() for k, v in r.hgetall(key).items()}
        secrets |= {record["visitor"], record["ua"], record["session_id"]}
    assert len(secrets) > 3
    for secret in secrets:
        assert secret not in text
    assert not re.search(r"[0-9a-f]{32}", text)


def test_page_login_and_dashboard(stack: Any) -> None:
    server, redis_server, _ = stack
    base, r = server.base_url, redis_server.client()
    session_id = request_token(base, "192.0.2.50").json()["session_id"]
    visitor = session_record(r, session_id)["visitor"]
    r.set(keys.block(visitor), '{"reason": "page test", "by": "ops", "created_at": 1}', ex=600)

    login = httpx.get(base + "/ops", timeout=10)
    assert login.status_code == 200
    assert 'type="password"' in login.text and 'action="/ops"' in login.text
    for response in (login,):
        assert "<script" not in response.text.lower()
        assert "script-src" not in response.headers["content-security-policy"]
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert response.headers["cache-control"] == "no-store"
        assert "set-cookie" not in response.headers

    wrong = httpx.post(base + "/ops", data={"token": "nope"}, timeout=10)
    assert wrong.status_code == 401 and "not valid" in wrong.text
    assert httpx.get(base + "/ops", headers=auth("nope"), timeout=10).status_code == 401

    page = httpx.post(base + "/ops", data={"token": OPS_TOKEN, "action": "view"}, timeout=15)
    assert page.status_code == 200
    html = page.text
    assert "set-cookie" not in page.headers and "<script" not in html.lower()
    assert html.count("<svg") == 2
    assert "Sessions and refusals per hour" in html and "against the daily ceiling" in html
    assert "Active sessions" in html and session_id in html
    assert "Top visitors" in html and visitor in html
    assert "page test" in html
    assert OPS_TOKEN in html  # only in the hidden fields of its own forms, never a URL
    assert "?token=" not in html

    same = httpx.get(base + "/ops", headers=auth(), timeout=15)
    assert same.status_code == 200 and "<svg" in same.text

    lifted = httpx.post(
        base + "/ops", data={"token": OPS_TOKEN, "action": "unblock", "visitor": visitor},
        timeout=15,
    )  # fmt: skip
    assert lifted.status_code == 200 and f"Unblocked {visitor}." in lifted.text
    assert r.exists(keys.block(visitor)) == 0
    blocked = httpx.post(
        base + "/ops", data={"token": OPS_TOKEN, "action": "block", "visitor": visitor},
        timeout=15,
    )  # fmt: skip
    assert blocked.status_code == 200 and "Blocked" in blocked.text
    assert 0 < r.ttl(keys.block(visitor)) <= 7 * 86_400
    r.delete(keys.block(visitor))
