"""Schemathesis hooks for the long CLI run (tests/server/fuzz_run.py sets SCHEMATHESIS_HOOKS to
this module and FUZZ_REDIS_URL to the fuzzed server's Redis): the checks tests/server/test_fuzz.py
makes in the suite, as CLI checks: a refused request changes nothing in Redis; a 201 of the
request form stored the request it names, or (the honeypot) nothing; a 200 of the give-back
closed the session it names and freed only what that session held. Needs one request at a
time (schemathesis.toml: workers = 1)."""

from __future__ import annotations

import os
from typing import Any

import redis
import schemathesis

from agents_catalog import load_catalog
from server.api_document import load_document
from tests.server.fuzz_support import RedisWatch, honeypot_filled

WATCH = RedisWatch(
    redis.Redis.from_url(os.environ["FUZZ_REDIS_URL"]),
    honeypot=honeypot_filled(load_document([p.id for p in load_catalog()])),
)


@schemathesis.hook
def before_call(
    context: schemathesis.HookContext, case: schemathesis.Case[Any], kwargs: Any
) -> None:
    WATCH.before_case()


@schemathesis.check
def redis_changed_only_by_what_was_accepted(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> bool | None:
    status = response.status_code
    wrong = WATCH.case_problems(case.operation.label, status, response.json, case.body)
    if wrong:
        raise AssertionError(f"answered {status}, and in Redis: {wrong[:10]}")
    return None
