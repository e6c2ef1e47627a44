"""Fuzzing the public HTTP surface: schemathesis against the running server's own document.

A real `python token_server.py` on loopback with a real Redis (tests/fuzz_support.py);
schemathesis' pytest integration with the document the server serves (/openapi.json: built
here by the same code, api_document.py, and checked equal to what the server serves before
the first case), every operation fuzzed with the settings of schemathesis.toml and a fixed
seed, one test per operation: positive and negative cases, schemathesis' coverage
scenarios (missing and boundary values, undeclared methods) and the document's examples.
Each case must get:

- no 5xx (with Redis up there is no reason for one, 503 included);
- an answer the document describes: status, content type, headers, body schema;
- no change in Redis unless it was admitted (201): Redis is read before and after each case.

At least 1,000 cases, well under two minutes on two cores. A longer run:
docs/security.md, "Fuzzing".
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
import schemathesis

from agents_catalog import load_catalog
from api_document import URL, load_document
from tests.fuzz_support import (
    ADMITTED,
    FuzzTally,
    RedisWatch,
    fuzz_policies,
    fuzz_server_env,
)
from tests.support import ROOT, ServerProcess
from tests.web_support import ensure_bundle

# Per operation, for schemathesis' fuzzing phase (its coverage and examples phases add
# theirs); POST /api/token, the one that mints and writes, gets TOKEN_SHARE times as many.
# Operations without inputs get only their coverage scenarios. About 1,100 cases in all.
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "160"))
TOKEN_SHARE = 3
SEED = int(os.environ.get("FUZZ_SEED", "20261201"))
MIN_CASES = 1000


@pytest.fixture(scope="module")
def fuzz_server(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    ensure_bundle()  # the page answers 200, not 503 "not built"
    policies = fuzz_policies(tmp_path_factory.mktemp("fuzz-policies"))
    server = ServerProcess(env=fuzz_server_env(redis_url, policies)).start()
    served = httpx.get(server.base_url + URL, timeout=10)
    assert served.json() == DOCUMENT
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fuzz_redis(redis_url: str, fuzz_server: ServerProcess) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="module")
def tally() -> FuzzTally:
    return FuzzTally()


@pytest.fixture(scope="module")
def watch(fuzz_redis: redis.Redis) -> RedisWatch:
    return RedisWatch(fuzz_redis)


def fuzz_config() -> schemathesis.Config:
    settings = tomllib.loads((ROOT / "schemathesis.toml").read_text())
    settings["seed"] = SEED
    settings.setdefault("generation", {})["max-examples"] = MAX_EXAMPLES
    token = {"max-examples": MAX_EXAMPLES * TOKEN_SHARE}
    settings.setdefault("operations", []).append(
        {"include-operation-id": "issueToken", "generation": token}
    )
    return schemathesis.Config.from_dict(settings, base_dir=str(ROOT))


# The document as the server builds it (collection needs it before any server runs; the
# `fuzz_server` fixture checks the served one is the same).
DOCUMENT = load_document([persona.id for persona in load_catalog()])
schema = schemathesis.openapi.from_dict(DOCUMENT, config=fuzz_config())


def test_the_redis_watch_sees_any_write(fuzz_redis: redis.Redis) -> None:
    """What the fuzzing below relies on: a refusal that wrote anything would be seen."""
    watch = RedisWatch(fuzz_redis)
    fuzz_redis.hset("watch-test:h", mapping={"a": "1"})
    for write in (
        lambda: fuzz_redis.set("watch-test:new", "x"),
        lambda: fuzz_redis.hset("watch-test:h", "a", "2"),
        lambda: fuzz_redis.zadd("watch-test:z", {"m": 1.0}),
        lambda: fuzz_redis.delete("watch-test:new"),
    ):
        watch.before_case()
        assert watch.refusal_changes(404) == []
        write()
        assert watch.refusal_changes(404), write
    watch.before_case()
    fuzz_redis.set("watch-test:admitted", "x")
    assert watch.refusal_changes(ADMITTED) == []  # an admission may write
    fuzz_redis.flushdb()


@schema.parametrize()
def test_public_api_under_fuzzing(
    case: schemathesis.Case[Any], watch: RedisWatch, tally: FuzzTally, fuzz_server: ServerProcess
) -> None:
    watch.before_case()
    response = case.call(base_url=fuzz_server.base_url, timeout=30)
    tally.record(case.operation.label, response.status_code)
    # Status, content type, headers and body against the document; no 5xx; malformed
    # input refused, well-formed input not (schemathesis.toml says with what).
    case.validate_response(response)
    assert response.status_code < 500, (response.status_code, response.text, fuzz_server.logs())
    changed = watch.refusal_changes(response.status_code)
    assert not changed, (
        f"{case.method} {case.path} answered {response.status_code} and changed Redis: "
        f"{changed[:10]}\n{case.as_curl_command()}"
    )


def test_the_fuzz_run_was_large_and_mostly_refusals(tally: FuzzTally) -> None:
    """Runs after the fuzzing above (same module, in order): how much it really covered."""
    assert tally.cases, "run test_public_api_under_fuzzing first (the whole module)"
    print(tally.summary())
    assert tally.cases >= MIN_CASES, tally.summary()
    documented = {f"{method.upper()} {path}" for path, ops in DOCUMENT["paths"].items()
                  for method in ops}  # fmt: skip
    assert set(tally.operations) == documented, tally.summary()
    # Limits out of reach: admissions kept succeeding, none refused by admission.
    assert tally.statuses[ADMITTED] >= 50, tally.summary()
    assert tally.statuses[429] == 0, tally.summary()
    # Most cases were refused, each with Redis checked unchanged.
    assert tally.refusals_checked >= tally.cases // 2, tally.summary()
