"""Fuzzing the public HTTP surface: schemathesis against the running server's own document.

A real `python token_server.py` on loopback with a real Redis (tests/server/fuzz_support.py);
schemathesis' pytest integration with the document the server serves (/openapi.json: built
here by the same code, server/api_document.py, and checked equal to what the server serves before
the first case), every operation fuzzed with the settings of schemathesis.toml and a fixed
seed, one test per operation: positive and negative cases, schemathesis' coverage
scenarios (missing and boundary values, undeclared methods) and the document's examples.
Each case must get:

- no 5xx (with Redis up there is no reason for one, 503 included);
- an answer the document describes: status, content type, headers, body schema;
- no change in Redis unless it was admitted (201) or a token given back (200): Redis is
  read before and after each case;
- a 201 of the request form stored the request it names and nothing else, or, when the
  document says the honeypot caught it, changed nothing at all;
- a 200 of POST /api/token/release closed the session it names and changed nothing else but
  the slots and minutes that session held. The fuzzer cannot know a token's release secret,
  so its give-backs are refused (403 `release_refused` for well-formed guesses, 422...):
  test_the_watch_holds_a_give_back_to_its_session shows the check on a real one.

At least 1,000 cases (about 1,400), well under two minutes on two cores. A longer run:
docs/security.md, "Fuzzing".
"""

from __future__ import annotations

import os
import time
import tomllib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
import schemathesis

from agents_catalog import load_catalog
from redisdb import keys
from server.api_document import URL, load_document
from tests.server.fuzz_support import (
    ADMITTED,
    GIVE_BACK,
    SALES_FORM,
    FuzzTally,
    RedisWatch,
    fuzz_policies,
    fuzz_server_env,
    honeypot_filled,
)
from tests.support import ROOT, ServerProcess
from tests.web.support import ensure_bundle

# Per operation, for schemathesis' fuzzing phase (its coverage and examples phases add
# theirs); the two that write, POST /api/token and POST /api/requests, get SHARE times as
# many. Operations without inputs get only their coverage scenarios.
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "90"))
SHARE = {"issueToken": 3, "submitSalesRequest": 3}
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
    return RedisWatch(fuzz_redis, honeypot=HONEYPOT_FILLED)


def fuzz_config() -> schemathesis.Config:
    settings = tomllib.loads((ROOT / "schemathesis.toml").read_text())
    settings["seed"] = SEED
    settings.setdefault("generation", {})["max-examples"] = MAX_EXAMPLES
    settings.setdefault("operations", []).extend(
        {"include-operation-id": operation, "generation": {"max-examples": MAX_EXAMPLES * share}}
        for operation, share in SHARE.items()
    )
    return schemathesis.Config.from_dict(settings, base_dir=str(ROOT))


# The document as the server builds it (collection needs it before any server runs; the
# `fuzz_server` fixture checks the served one is the same).
DOCUMENT = load_document([persona.id for persona in load_catalog()])
schema = schemathesis.openapi.from_dict(DOCUMENT, config=fuzz_config())
HONEYPOT_FILLED = honeypot_filled(DOCUMENT)
AGENT = {"agent": "agence-immo-fr"}


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
    # A key that runs out of time meanwhile is Redis' doing; one deleted before its time is not.
    fuzz_redis.set("watch-test:expiring", "x", px=200)
    fuzz_redis.set("watch-test:deleted", "x", ex=60)
    watch.before_case()
    time.sleep(0.3)
    assert fuzz_redis.get("watch-test:expiring") is None
    assert watch.refusal_changes(404) == []
    fuzz_redis.delete("watch-test:deleted")
    assert watch.refusal_changes(404) == ["removed b'watch-test:deleted'"]
    fuzz_redis.flushdb()


def test_the_watch_holds_a_201_of_the_form_to_what_it_names(fuzz_redis: redis.Redis) -> None:
    """What the fuzzing below relies on for the request form's 201s."""
    watch = RedisWatch(fuzz_redis)
    watch.before_case()
    assert watch.sales_request_problems("AAAA-BBBB-CCCC", honeypot=True) == []
    assert watch.sales_request_problems("AAAA-BBBB-CCCC", honeypot=False)  # nothing stored
    fuzz_redis.hset(keys.request("AAAA-BBBB-CCCC"), "name", "x")
    fuzz_redis.incr(keys.requests_global_day(1))
    assert watch.sales_request_problems("AAAA-BBBB-CCCC", honeypot=False) == []
    assert watch.sales_request_problems("AAAA-BBBB-CCCC", honeypot=True)
    assert watch.sales_request_problems("DDDD-EEEE-FFFF", honeypot=False)  # not the one named
    fuzz_redis.set(keys.block("someone"), "1")
    assert watch.sales_request_problems("AAAA-BBBB-CCCC", honeypot=False)  # not its to write
    fuzz_redis.flushdb()


def test_the_watch_holds_a_give_back_to_its_session(
    fuzz_redis: redis.Redis, fuzz_server: ServerProcess
) -> None:
    """What the fuzzing below relies on for a 200 of POST /api/token/release: a real token
    given back passes; one that changed nothing, or something else, does not."""
    watch = RedisWatch(fuzz_redis)

    def issued() -> dict[str, str]:
        grant = httpx.post(fuzz_server.base_url + "/api/token", json=AGENT, timeout=10).json()
        return {name: grant[name] for name in ("session_id", "release_secret")}

    def give_back(grant: dict[str, str]) -> httpx.Response:
        return httpx.post(fuzz_server.base_url + "/api/token/release", json=grant, timeout=10)

    first, second = issued(), issued()
    watch.before_case()
    response = give_back(first)
    assert response.status_code == 200, response.text
    assert watch.case_problems(GIVE_BACK, 200, response.json, first) == []
    assert watch.give_back_problems(second["session_id"])  # not the one given back
    watch.before_case()
    assert watch.give_back_problems(first["session_id"])  # nothing changed
    watch.before_case()
    assert give_back(second).status_code == 200
    fuzz_redis.set(keys.block("someone"), "1")
    assert watch.give_back_problems(second["session_id"]) == [
        f"added {keys.block('someone').encode()!r}"
    ]
    fuzz_redis.flushdb()


@schema.parametrize()
def test_public_api_under_fuzzing(
    case: schemathesis.Case[Any], watch: RedisWatch, tally: FuzzTally, fuzz_server: ServerProcess
) -> None:
    watch.before_case()
    response = case.call(base_url=fuzz_server.base_url, timeout=30)
    operation, status = case.operation.label, response.status_code
    tally.record(operation, status)
    # Status, content type, headers and body against the document; no 5xx; malformed
    # input refused, well-formed input not (schemathesis.toml says with what).
    case.validate_response(response)
    assert status < 500, (status, response.text, fuzz_server.logs())
    if operation == SALES_FORM and status == ADMITTED:
        tally.sales_requests["honeypot" if HONEYPOT_FILLED(case.body) else "stored"] += 1
    if operation == GIVE_BACK and response.content:  # a HEAD's 405 has no body
        tally.give_backs[response.json().get("error", "given_back")] += 1
    wrong = watch.case_problems(operation, status, response.json, case.body)
    assert not wrong, (
        f"{case.method} {case.path} answered {status}, and in Redis: {wrong[:10]}\n"
        f"{case.as_curl_command()}"
    )


def test_the_fuzz_run_was_large_and_mostly_refusals(tally: FuzzTally) -> None:
    """Runs after the fuzzing above (same module, in order): how much it really covered."""
    assert tally.cases, "run test_public_api_under_fuzzing first (the whole module)"
    print(tally.summary())
    assert tally.cases >= MIN_CASES, tally.summary()
    documented = {f"{method.upper()} {path}" for path, ops in DOCUMENT["paths"].items()
                  for method in ops}  # fmt: skip
    assert set(tally.operations) == documented, tally.summary()
    # Limits out of reach: admissions and requests kept succeeding, none refused by a limit
    # (the form's is 100 a day per visitor: a much longer run than this one may reach it).
    requests = tally.sales_requests
    assert tally.statuses[ADMITTED] - requests.total() >= 50, tally.summary()
    assert requests["stored"] >= 50 and requests["honeypot"] >= 10, tally.summary()
    assert tally.statuses[429] == 0, tally.summary()
    # Give-backs got past the body's checks to the session lookup, and were refused there.
    assert tally.give_backs["release_refused"] >= 20, tally.summary()
    # Most cases were refused, each with Redis checked unchanged.
    assert tally.refusals_checked >= tally.cases // 2, tally.summary()
