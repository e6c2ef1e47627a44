"""Lookup and erasure check the VISITOR_HASH_SECRET first: the token server keeps a
fingerprint of its secret in Redis (a keyed hash, nothing of the secret, with a TTL), and
an ops CLI or API with another secret is refused (exit 2 / 409) instead of answering
"0 found, 0 deleted" about data it simply cannot see. The address may come on standard
input, out of `ps` and the shell's history."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from policies import load_policies
from redisdb import keys
from tests.ops.support import (
    HASH_SECRET,
    auth,
    ops_json,
    request_token,
    run_ops,
    running_ops_stack,
    write_ops_policies,
)
from tests.server.support import dump_redis, session_record
from tests.support import wait_until

WRONG_SECRET = "not-the-token-servers-secret-0123456789abcdefgh"
SWEEP_S = 5


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, ...]]:
    # The fingerprint is re-asserted on every sweep: a long one here, so the tests that
    # take it away are not raced by the server putting it back.
    directory = tmp_path_factory.mktemp("policies")
    with running_ops_stack(write_ops_policies(directory, sessions={"sweep_every_s": 3600})) as s:
        yield s


@pytest.fixture
def quick_sweep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, ...]]:
    directory = tmp_path_factory.mktemp("policies")
    with running_ops_stack(write_ops_policies(directory, sessions={"sweep_every_s": SWEEP_S})) as s:
        yield s


def fingerprints(r: redis.Redis) -> list[bytes]:
    return sorted(r.scan_iter(match=keys.pattern(keys.PEPPER)))


def without_audit_log(r: redis.Redis) -> list[tuple[bytes, tuple[bytes, ...]]]:
    return sorted(
        (k.name, k.contents) for k in dump_redis(r) if keys.kind_of(k.name.decode()) != keys.OPS_LOG
    )


def test_the_token_server_records_a_fingerprint_of_its_secret(stack: Any) -> None:
    _, redis_server, env = stack
    r = redis_server.client()
    # Written at start, before any visitor came.
    names = fingerprints(r)
    assert len(names) == 1
    retention = load_policies().retention
    ttl = r.ttl(names[0])
    assert 0 < ttl <= max(retention.session_ttl_s, retention.pseudonym_ttl_s)
    blob = names[0] + b"\n" + (r.get(names[0]) or b"")
    secret = HASH_SECRET.encode()
    for start in range(len(secret) - 7):  # no 8-byte piece of the secret
        assert secret[start : start + 8] not in blob
    for digest in (hashlib.sha256(secret).hexdigest(), hashlib.md5(secret).hexdigest()):
        assert digest[:16].encode() not in blob
    assert run_ops(env, "audit").returncode == 0


def test_a_wrong_secret_is_refused_and_changes_nothing(stack: Any) -> None:
    server, redis_server, env = stack
    r = redis_server.client()
    assert request_token(server.base_url, "198.51.100.90").status_code == 201
    wrong = {**env, "VISITOR_HASH_SECRET": WRONG_SECRET}
    before = without_audit_log(r)
    for command in ("lookup", "erase"):
        for json_flag in ((), ("--json",)):
            done = run_ops(wrong, command, "--ip", "198.51.100.90", *json_flag)
            assert done.returncode == 2, (command, done.stdout, done.stderr)
            assert done.stdout == ""
            assert done.stderr.startswith(f"ops {command}: VISITOR_HASH_SECRET is not the secret")
            assert "Nothing was read or changed" in done.stderr
    assert without_audit_log(r) == before
    # With the token server's secret the same address is found.
    assert ops_json(env, "lookup", "--ip", "198.51.100.90")["found"]["sessions"] == 1
    refused = [
        e
        for e in ops_json(env, "audit-log")["entries"]
        if e["outcome"] == "refused: secret_mismatch"
    ]
    assert {e["action"] for e in refused} == {"lookup", "erase"}


def test_without_any_fingerprint_lookup_is_refused_while_salts_live(stack: Any) -> None:
    """Redis has data (a salt) but nothing says which secret made it: no guessing."""
    server, redis_server, env = stack
    r = redis_server.client()
    assert request_token(server.base_url, "198.51.100.92").status_code == 201
    saved = {name: (r.get(name), r.ttl(name)) for name in fingerprints(r)}
    r.delete(*saved)
    try:
        done = run_ops(env, "lookup", "--ip", "198.51.100.92")
        assert done.returncode == 2
        assert "holds no fingerprint" in done.stderr and "Start the token server" in done.stderr
    finally:
        for name, (value, ttl) in saved.items():
            r.set(name, value or b"1", ex=ttl, nx=True)


def test_the_api_answers_a_clear_error_on_a_mismatch(stack: Any) -> None:
    server, redis_server, _ = stack
    r = redis_server.client()
    saved = {name: (r.get(name), r.ttl(name)) for name in fingerprints(r)}
    r.delete(*saved)
    other = keys.pepper("0" * 32)  # data made by a server with another secret
    r.set(other, "1", ex=3600)
    try:
        response = httpx.post(
            server.base_url + "/ops/lookup", json={"ip": "198.51.100.90"}, headers=auth(),
            timeout=15,
        )  # fmt: skip
        assert response.status_code == 409, response.text
        assert response.json()["error"] == "secret_mismatch"
        assert "VISITOR_HASH_SECRET" in response.json()["message"]
    finally:
        r.delete(other)
        for name, (value, ttl) in saved.items():
            r.set(name, value or b"1", ex=ttl, nx=True)


def test_the_fingerprint_is_reasserted_after_redis_lost_it(quick_sweep: Any) -> None:
    _, redis_server, _ = quick_sweep
    r = redis_server.client()
    names = fingerprints(r)
    r.delete(*names)
    wait_until(lambda: fingerprints(r) == names, timeout=SWEEP_S * 4)


def test_the_address_may_come_on_standard_input(stack: Any) -> None:
    server, redis_server, env = stack
    r = redis_server.client()
    response = request_token(server.base_url, "198.51.100.93")
    session_id = response.json()["session_id"]
    assert session_record(r, session_id)

    found = run_ops(env, "lookup", "--ip", "-", "--json", stdin="198.51.100.93\n")
    assert found.returncode == 0, found.stderr
    assert '"session_id": "' + session_id + '"' in found.stdout
    erased = run_ops(env, "erase", "--ip", "-", stdin="198.51.100.93\n")
    assert erased.returncode == 0, erased.stderr
    assert "Deleted: 1 session(s)" in erased.stdout
    assert r.exists(keys.session(session_id)) == 0

    for bad in ("", "\n", "not-an-address\n"):
        done = run_ops(env, "lookup", "--ip", "-", stdin=bad)
        assert done.returncode == 2, (bad, done.stdout)
        assert "address" in done.stderr
