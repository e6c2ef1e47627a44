"""Schemathesis hooks for the long CLI run (tests/fuzz_run.py sets SCHEMATHESIS_HOOKS to
this module and FUZZ_REDIS_URL to the fuzzed server's Redis): the check tests/test_fuzz.py
makes in the suite, that a refused request changes nothing in Redis, as a CLI check.
Needs one request at a time (schemathesis.toml: workers = 1)."""

from __future__ import annotations

import os
from typing import Any

import redis
import schemathesis

from tests.fuzz_support import RedisWatch

WATCH = RedisWatch(redis.Redis.from_url(os.environ["FUZZ_REDIS_URL"]))


@schemathesis.hook
def before_call(
    context: schemathesis.HookContext, case: schemathesis.Case[Any], kwargs: Any
) -> None:
    WATCH.before_case()


@schemathesis.check
def redis_unchanged_by_refusals(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> bool | None:
    changed = WATCH.refusal_changes(response.status_code)
    if changed:
        raise AssertionError(f"answered {response.status_code} and changed Redis: {changed[:10]}")
    return None
