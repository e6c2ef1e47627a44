"""The fuzzed server and what watches it: shared by tests/server/test_fuzz.py (the bounded run in
the suite) and the long CLI run (tests/server/fuzz_run.py with tests/server/fuzz_hooks.py).

A real `python token_server.py` on loopback with a real Redis. Limits are raised far out of
reach: the run is about input handling, and a visitor (every generated request comes from
one address, or the few valid ones the fuzzer writes in X-Forwarded-For) must not be
refused by admission, or by the request form's daily limits, after its first few calls.

Two things change Redis without any request, and must not be taken for a refused request
that wrote: keys running out of time (slot leases after about 20 minutes, hourly counters),
which the watch tells apart by the TTL each key had left; and the never-joined sweeper, which
here first runs an hour after start (ops.yaml `sessions.sweep_every_s`, the most allowed), so
a run shorter than that meets none (the long CLI run of docs/security.md takes over 20
minutes: a 15-minute join window alone was not enough).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema_rs
import redis
import yaml

from redisdb import keys
from tests.sales.support import write_request_policies
from tests.server.support import roomy_caps, settings_env
from tests.support import ROOT, write_policies

# Unjoined tokens and every prefix aggregate out of reach too (roomy_caps): the fuzzer
# never joins with the tokens it takes, and its few addresses share networks.
FUZZ_LIMITS = roomy_caps(
    {
        "visitor": {"concurrent_sessions": 1_000_000, "sessions_per_hour": 1_000_000,
                    "sessions_per_day": 1_000_000, "minutes_per_day": 100_000_000},
        "global": {"concurrent_sessions": 1_000_000, "minutes_per_day": 100_000_000},
        "session": {"join_window_s": 900},
    },
    n=1_000_000,
)  # fmt: skip
# The request form's day (policies/requests.yaml): the most its rules allow per visitor.
FUZZ_REQUEST_LIMITS = {"per_visitor_per_day": 100, "global_per_day": 100_000}
FUZZ_SWEEP_EVERY_S = 3600
ALLOWED_ORIGIN = "https://www.onecallflow.test"
# The only answers that may write to Redis during a run: an admission or an accepted sales
# request (201), a token given back (200). Admission refusals (429, 403 blocked, 503
# capacity) are recorded too, by design, but with FUZZ_LIMITS none happens; a request
# refused for its input never gets that far.
ADMITTED = 201
SALES_FORM = "POST /api/requests"
GIVE_BACK = "POST /api/token/release"
GIVEN_BACK = 200
# What an accepted sales request writes: its record, its email's index, the day's counts,
# and the salt of the visitor's pseudonym if none was drawn yet (no mail: no queue).
REQUEST_WRITES = frozenset(
    {keys.REQUEST, keys.REQUESTS_BY_EMAIL, keys.REQUESTS_VISITOR_DAY, keys.REQUESTS_GLOBAL_DAY,
     keys.SALT}
)  # fmt: skip
# What giving a token back writes besides its session record (release.lua): the session
# leaves the slot and unjoined sets (a set left empty is gone), and the minutes it reserved
# come off the visitor's and the day's counts.
GIVE_BACK_SETS = frozenset(
    {keys.VISITOR_ACTIVE, keys.VISITOR_UNJOINED, keys.GLOBAL_ACTIVE, keys.GLOBAL_UNJOINED,
     keys.NETWORK_ACTIVE, keys.NETWORK_UNJOINED}
)  # fmt: skip
GIVE_BACK_COUNTS = frozenset({keys.VISITOR_SECONDS, keys.GLOBAL_SECONDS})


def fuzz_policies(directory: Path) -> Path:
    write_request_policies(directory, limits=FUZZ_REQUEST_LIMITS)
    ops = yaml.safe_load((ROOT / "policies" / "ops.yaml").read_text())
    ops["sessions"]["sweep_every_s"] = FUZZ_SWEEP_EVERY_S
    (directory / "ops.yaml").write_text(yaml.safe_dump(ops))
    return write_policies(directory, limits=FUZZ_LIMITS)


def fuzz_server_env(redis_url: str, policies_dir: Path) -> dict[str, str]:
    # 127.0.0.1 as a trusted proxy: the fuzzer's X-Forwarded-For values are parsed.
    return settings_env(
        redis_url,
        POLICIES_DIR=str(policies_dir),
        TRUSTED_PROXIES="127.0.0.1/32",
        ALLOWED_ORIGINS=ALLOWED_ORIGIN,
    )


@dataclass(frozen=True)
class Snapshot:
    """Every key's type and contents (not its TTL, which ticks), and how long each key that
    expires had left when it was read."""

    keys: dict[bytes, tuple[str, Any]]
    expires_in_ms: dict[bytes, int]
    taken: float  # time.monotonic() when the TTLs were read


# A key whose TTL ran out between two snapshots is gone by Redis' doing, not by a request's:
# what it had left, give or take this, against the time between them.
EXPIRY_SLACK_MS = 1000


def redis_state(client: redis.Redis) -> Snapshot:
    """The snapshot in three round trips whatever the size of the database: taken before
    and after each of a thousand cases."""
    names = list(client.scan_iter(count=10_000))
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.type(name)
        pipe.pttl(name)
    replies = pipe.execute()
    taken = time.monotonic()
    kinds = [k.decode() if isinstance(k, bytes) else str(k) for k in replies[0::2]]
    expires = {n: int(t) for n, t in zip(names, replies[1::2], strict=True) if int(t) >= 0}
    readers: dict[str, Callable[[bytes], object]] = {
        "string": lambda n: pipe.get(n),
        "hash": lambda n: pipe.hgetall(n),
        "set": lambda n: pipe.smembers(n),
        "zset": lambda n: pipe.zrange(n, 0, -1, withscores=True),
        "list": lambda n: pipe.lrange(n, 0, -1),
        "stream": lambda n: pipe.xrange(n),
    }
    present = [(n, k) for n, k in zip(names, kinds, strict=True) if k != "none"]
    for name, kind in present:
        if kind not in readers:
            raise AssertionError(f"unexpected Redis type {kind} for {name!r}")
        readers[kind](name)
    values = pipe.execute()
    state = {name: (kind, value) for (name, kind), value in zip(present, values, strict=True)}
    return Snapshot(state, expires, taken)


def changed_keys(before: Snapshot, after: Snapshot) -> list[tuple[str, bytes]]:
    """(how, key) for every key added, removed (but not expired) or changed."""
    elapsed_ms = (after.taken - before.taken) * 1000 + EXPIRY_SLACK_MS
    old, new = before.keys, after.keys
    added = sorted(set(new) - set(old))
    removed = sorted(
        k for k in set(old) - set(new) if before.expires_in_ms.get(k, elapsed_ms + 1) > elapsed_ms
    )
    changed = sorted(k for k in set(old) & set(new) if old[k] != new[k])
    return (
        [("added", k) for k in added]
        + [("removed", k) for k in removed]
        + [("changed", k) for k in changed]
    )


def describe_changes(before: Snapshot, after: Snapshot) -> list[str]:
    return [f"{how} {key!r}" for how, key in changed_keys(before, after)]


def honeypot_filled(document: dict[str, Any]) -> Callable[[object], bool]:
    """Whether a request form's body is caught by the honeypot, as the document says
    (HoneypotFilled): the oracle for what its 201 may have written."""
    validator = jsonschema_rs.validator_for(
        {"$ref": "#/components/schemas/HoneypotFilled", "components": document["components"]}
    )
    return validator.is_valid


@dataclass
class RedisWatch:
    """Redis as it was before a case; after it, what the case changed."""

    client: redis.Redis
    # Whether a request form's body is caught by the honeypot (honeypot_filled).
    honeypot: Callable[[object], bool] = lambda body: False
    _before: Snapshot | None = None

    def case_problems(
        self, operation: str, status: int, answer: Callable[[], Any], body: object
    ) -> list[str]:
        """What is wrong in Redis after one case (`answer` reads its JSON body): only an
        accepted request form, an admission or a give-back may have written, and only
        what each accounts for."""
        if operation == SALES_FORM and status == ADMITTED:
            return self.sales_request_problems(answer()["reference"], self.honeypot(body))
        if operation == GIVE_BACK and status == GIVEN_BACK:
            return self.give_back_problems(answer()["session_id"])
        return self.refusal_changes(status)

    def before_case(self) -> None:
        self._before = redis_state(self.client)

    def changes(self) -> list[str]:
        if self._before is None:
            raise AssertionError("no snapshot taken before this case")
        return describe_changes(self._before, redis_state(self.client))

    def refusal_changes(self, status: int) -> list[str]:
        """What a refused case (any answer but an admission) changed: must be nothing."""
        return [] if status == ADMITTED else self.changes()

    def sales_request_problems(self, reference: str, honeypot: bool) -> list[str]:
        """What is wrong in Redis after a 201 of the request form: the honeypot must have
        changed nothing; an accepted request must have added the record it names, and
        changed nothing but what accounts for it."""
        if self._before is None:
            raise AssertionError("no snapshot taken before this case")
        after = redis_state(self.client)
        changes = changed_keys(self._before, after)
        if honeypot:
            return [f"honeypot {how} {key!r}" for how, key in changes]
        record = keys.request(reference).encode()
        problems = [] if ("added", record) in changes else [f"no new record {record!r}"]
        problems += [
            f"{how} {key!r}"
            for how, key in changes
            if how == "removed" or keys.kind_of(key.decode()) not in REQUEST_WRITES
        ]
        return problems

    def give_back_problems(self, session_id: str) -> list[str]:
        """What is wrong in Redis after a 200 of POST /api/token/release: the session's
        record must have changed; nothing else but this session leaving slot and unjoined
        sets and its minutes coming off the counts; nothing added."""
        if self._before is None:
            raise AssertionError("no snapshot taken before this case")
        state = redis_state(self.client)
        changes = changed_keys(self._before, state)
        before, after = self._before.keys, state.keys
        record = keys.session(session_id).encode()
        problems = [] if ("changed", record) in changes else [f"record {record!r} not changed"]
        for how, key in changes:
            kind = keys.kind_of(key.decode())
            was, now = before.get(key), after.get(key)
            if key == record and how == "changed":
                continue
            if kind in GIVE_BACK_SETS and how != "added" and _left(was, now) == {session_id}:
                continue
            if kind in GIVE_BACK_COUNTS and how == "changed" and _lower(was, now):
                continue
            problems.append(f"{how} {key!r}")
        return problems


def _left(was: tuple[str, Any] | None, now: tuple[str, Any] | None) -> set[str] | None:
    """The members that left a sorted set, or None if any came or moved."""
    old = dict(was[1]) if was else {}
    new = dict(now[1]) if now else {}
    if any(old.get(member) != score for member, score in new.items()):
        return None
    return {member.decode() for member in set(old) - set(new)}


def _lower(was: tuple[str, Any] | None, now: tuple[str, Any] | None) -> bool:
    return was is not None and now is not None and int(now[1]) < int(was[1])


@dataclass
class FuzzTally:
    """What a run sent and got: cases per operation, statuses."""

    operations: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    refusals_checked: int = 0
    # 201s of the request form: stored, or caught by the honeypot (nothing stored).
    sales_requests: Counter[str] = field(default_factory=Counter)
    # Answers of POST /api/token/release by error code (`given_back` for a 200).
    give_backs: Counter[str] = field(default_factory=Counter)

    def record(self, operation: str, status: int) -> None:
        self.operations[operation] += 1
        self.statuses[status] += 1
        if status != ADMITTED and (operation, status) != (GIVE_BACK, GIVEN_BACK):
            self.refusals_checked += 1

    @property
    def cases(self) -> int:
        return sum(self.operations.values())

    def summary(self) -> str:
        by_status = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        by_operation = ", ".join(f"{o}: {n}" for o, n in sorted(self.operations.items()))
        requests = ", ".join(f"{o}: {n}" for o, n in sorted(self.sales_requests.items()))
        give_backs = ", ".join(f"{o}: {n}" for o, n in sorted(self.give_backs.items()))
        return (
            f"{self.cases} cases; statuses {by_status}; per operation {by_operation}; "
            f"sales requests {requests or 'none'}; give-backs {give_backs or 'none'}"
        )
