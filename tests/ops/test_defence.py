"""Automatic defence: a visitor who keeps tripping their own limits is blocked for the
policy's time, shows up in `blocks` and `top` with the reason; capacity refusals (the whole
demo is full) are never held against a visitor."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from redisdb import keys
from tests.ops.support import METRICS_TOKEN, auth, ops_env, ops_json, request_token
from tests.server.support import away_from_bucket_edge, session_record
from tests.support import ROOT, RedisServer, ServerProcess, write_policies

THRESHOLD = 4
BLOCK_HOURS = 2


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, ...]]:
    directory = write_policies(
        tmp_path_factory.mktemp("policies"), limits={"global": {"concurrent_sessions": 3}}
    )
    rules = yaml.safe_load((ROOT / "policies" / "ops.yaml").read_text())
    rules["auto_block"].update(refusals_per_day=THRESHOLD, block_hours=BLOCK_HOURS)
    (Path(directory) / "ops.yaml").write_text(yaml.safe_dump(rules))
    server_redis = RedisServer().start()
    env = ops_env(server_redis.url, POLICIES_DIR=str(directory))
    server = ServerProcess(env=env).start()
    yield server, server_redis, env
    server.stop()
    server_redis.stop()


def test_visitor_tripping_limits_is_blocked_automatically(stack: Any) -> None:
    server, redis_server, env = stack
    r = redis_server.client()
    away_from_bucket_edge(r, 86_400, margin_s=20)  # refusals are counted per UTC day
    first = request_token(server.base_url, "192.0.2.77")
    visitor = session_record(r, first.json()["session_id"])["visitor"]
    codes = [request_token(server.base_url, "192.0.2.77").status_code for _ in range(THRESHOLD)]
    # Refusals 1..THRESHOLD are rate limits; reaching the threshold writes the block.
    assert codes == [429] * THRESHOLD
    ttl = r.ttl(keys.block(visitor))
    assert BLOCK_HOURS * 3600 - 5 < ttl <= BLOCK_HOURS * 3600
    after = request_token(server.base_url, "192.0.2.77")
    assert after.status_code == 403 and after.json()["error"] == "blocked"

    blocks = {b["visitor"]: b for b in ops_json(env, "blocks")["blocks"]}
    assert blocks[visitor]["by"] == "auto"
    assert (
        blocks[visitor]["reason"] == f"auto: {THRESHOLD} refusals today (last: visitor_concurrent)"
    )
    top = {v["visitor"]: v for v in ops_json(env, "top")["visitors"]}
    assert top[visitor]["blocked"] and top[visitor]["block_reason"].startswith("auto:")
    metrics = httpx.get(server.base_url + "/metrics", headers=auth(METRICS_TOKEN), timeout=10).text
    assert "ocf_auto_blocks_total 1.0" in metrics

    # Ops may lift it; the visitor starts from a clean slate only if refusals stop.
    assert ops_json(env, "unblock", visitor)["unblocked"] is True


def test_ops_block_is_never_shortened_by_the_defence(stack: Any) -> None:
    server, redis_server, env = stack
    r = redis_server.client()
    first = request_token(server.base_url, "192.0.2.78")
    visitor = session_record(r, first.json()["session_id"])["visitor"]
    ops_json(env, "block", visitor, "--for", "10d", "--reason", "known abuser")
    for _ in range(THRESHOLD + 2):
        assert request_token(server.base_url, "192.0.2.78").status_code == 403
    assert r.ttl(keys.block(visitor)) > 9 * 86_400
    assert {b["visitor"]: b for b in ops_json(env, "blocks")["blocks"]}[visitor]["reason"] == (
        "known abuser"
    )


def test_capacity_refusals_never_block_a_visitor(stack: Any) -> None:
    server, _, env = stack
    # Fill the demo's three lines (one slot may already be held by earlier tests).
    n = 0
    while request_token(server.base_url, f"198.18.0.{n + 1}").status_code == 201:
        n += 1
    victim = "198.18.1.1"
    for _ in range(THRESHOLD + 2):
        response = request_token(server.base_url, victim)
        assert response.status_code == 503 and response.json()["error"] == "capacity"
    # The first test's automatic block was lifted: no automatic block may exist now.
    assert [b for b in ops_json(env, "blocks")["blocks"] if b["by"] == "auto"] == []
    stats = ops_json(env, "stats")["total"]["refusals"]
    assert stats["global_concurrent"] >= THRESHOLD + 2
