"""A salt rotation does not lift blocks: a block set on a visitor's pseudonym of the
previous salt period (say, a 30-day block set a minute before the boundary) still refuses
that visitor after the rotation, and refusals counted under the previous pseudonym still
count toward the automatic block. Nothing new links the two pseudonyms in Redis: admission
hashes the address under the previous salt (which Redis keeps anyway for access and
erasure) in the request's memory only.

The token server (a real process) is started after the previous period's salt exists, as
it would be in production at a period change; the block is set with the ops CLI.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from redis.asyncio import Redis as AsyncRedis

from policies import load_policies
from policies.client_address import parse_ip
from policies.pseudonyms import VisitorHasher
from redisdb import keys
from tests.ops.support import (
    HASH_SECRET,
    ops_env,
    ops_json,
    request_token,
    run_ops,
    write_ops_policies,
)
from tests.server.support import away_from_bucket_edge, dump_redis, session_record
from tests.support import ROOT, RedisServer, ServerProcess, write_policies

THRESHOLD = 4
RETENTION = load_policies().retention


async def _pseudonyms(url: str, address: str) -> tuple[str, str]:
    """The address's pseudonyms under the previous period's salt (created here if the
    period had none, as it would have existed) and under the current one."""
    r = AsyncRedis.from_url(url)
    try:
        hasher = VisitorHasher(r, HASH_SECRET, RETENTION)
        now = float((await r.time())[0])
        previous = await hasher.current_salt(now - RETENTION.salt_period_s)
        current = await hasher.current_salt(now)
        ip = parse_ip(address)
        assert ip is not None
        return hasher.visitor(previous, ip), hasher.visitor(current, ip)
    finally:
        await r.aclose()


def pseudonyms(url: str, address: str) -> tuple[str, str]:
    return asyncio.run(_pseudonyms(url, address))


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, RedisServer, dict[str, str]]]:
    directory = write_ops_policies(
        tmp_path_factory.mktemp("policies"), auto_block={"refusals_per_day": THRESHOLD}
    )
    server_redis = RedisServer().start()
    pseudonyms(server_redis.url, "192.0.2.1")  # the previous period's salt, before the server
    env = ops_env(server_redis.url, POLICIES_DIR=str(directory))
    server = ServerProcess(env=env).start()
    yield server, server_redis, env
    server.stop()
    server_redis.stop()


def holding(r: redis.Redis, *texts: str) -> list[bytes]:
    return [k.name for k in dump_redis(r) if all(t.encode() in k.blob() for t in texts)]


def test_a_block_set_before_the_rotation_holds_after_it(stack: Any) -> None:
    server, redis_server, env = stack
    r = redis_server.client()
    address = "203.0.113.44"
    old_visitor, new_visitor = pseudonyms(redis_server.url, address)
    assert old_visitor != new_visitor
    done = ops_json(env, "block", old_visitor, "--for", "30d", "--reason", "flood at 23:59")
    assert done["blocked"]["visitor"] == old_visitor
    ttl_before = r.ttl(keys.block(old_visitor))

    refused = request_token(server.base_url, address)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"] == "blocked"
    # The block is read, never copied or lengthened; no key links the two pseudonyms.
    assert r.ttl(keys.block(old_visitor)) <= ttl_before
    assert r.exists(keys.block(new_visitor)) == 0
    assert holding(r, old_visitor, new_visitor) == []
    # Someone else is not affected, and the block ends when ops lift it.
    assert request_token(server.base_url, "203.0.113.45").status_code == 201
    assert ops_json(env, "unblock", old_visitor)["unblocked"] is True
    response = request_token(server.base_url, address)
    assert response.status_code == 201
    assert session_record(r, response.json()["session_id"])["visitor"] == new_visitor


def test_refusals_before_the_rotation_count_toward_the_automatic_block(stack: Any) -> None:
    """Refusals are counted per UTC day; a salt period starts at a UTC midnight, and a
    process whose clock is a little ahead of Redis' rotates while Redis' day (and its
    refusal count) goes on: those refusals still count."""
    server, redis_server, _ = stack
    r = redis_server.client()
    away_from_bucket_edge(r, 86_400, margin_s=20)
    address = "203.0.113.46"
    old_visitor, new_visitor = pseudonyms(redis_server.url, address)
    day = int(r.time()[0]) // 86_400
    old_refusals = keys.visitor_bucket(keys.VISITOR_REFUSALS, old_visitor, day)
    r.set(old_refusals, THRESHOLD - 1, ex=86_400 + 60)

    assert request_token(server.base_url, address).status_code == 201
    # One more refusal (a second call while the first is open) reaches the threshold.
    assert request_token(server.base_url, address).status_code == 429
    assert r.ttl(keys.block(new_visitor)) > 0
    after = request_token(server.base_url, address)
    assert after.status_code == 403 and after.json()["error"] == "blocked"
    assert r.get(old_refusals) == str(THRESHOLD - 1).encode()  # read, not changed


def test_no_block_may_outlive_the_next_rotation(tmp_path: Path) -> None:
    """Admission looks one salt period back, so the policy refuses longer blocks."""
    directory = write_policies(tmp_path, retention={"salt_period_days": 20})
    rules = yaml.safe_load((ROOT / "policies" / "ops.yaml").read_text())
    (directory / "ops.yaml").write_text(yaml.safe_dump(rules))  # blocks.max_days: 30
    done = run_ops(ops_env("redis://127.0.0.1:1/0", POLICIES_DIR=str(directory)), "blocks")
    assert done.returncode == 2
    assert "salt_period_days (20)" in done.stderr and "blocks.max_days" in done.stderr
