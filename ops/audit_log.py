"""The ops audit log: who did what through the ops surface, and when (accountability).

One Redis key per entry, `{ocf}:opslog:<ms>-<random>`, holding JSON {"at", "action",
"credential", "via", "outcome", "detail"} with a TTL of policies/ops.yaml
`audit_log.days`. Actions: lookup, erase, block, unblock, showcase_set, showcase_reset,
signin_failed, and on sales requests requests_list, request_show, request_contacted,
request_rectify, request_restrict, request_erase, request_export. The credential is named
(`OPS_TOKEN`, `SALES_TOKEN`, `METRICS_TOKEN`, `cli:<os user>`), never given. No entry holds
an address or an email: a lookup or an erasure records counts, not what was looked up; a
request is named by its reference or its email's keyed hash, a rectification by the names
of the fields changed. Entries about a block name the visitor pseudonym that was blocked,
which is why the retention is bounded by the pseudonym retention (policies/ops_rules.py checks it).

`python -m ops audit` (the retention check) holds these keys to that TTL too.
"""

from __future__ import annotations

import getpass
import json
import secrets
import time
from dataclasses import dataclass

from ops.context import OpsContext
from policies.replies import text
from redisdb import keys

ACTIONS = (
    "lookup", "erase", "block", "unblock", "showcase_set", "showcase_reset", "signin_failed",
    "requests_list", "request_show", "request_contacted", "request_rectify",
    "request_restrict", "request_erase", "request_export",
)  # fmt: skip
BATCH = 200


@dataclass(frozen=True)
class Actor:
    credential: str  # the credential's name, never its value
    via: str  # cli | api | page | metrics


API = Actor("OPS_TOKEN", "api")
PAGE = Actor("OPS_TOKEN", "page")
# The sales credential: requests only (ops/api.py, ops/page.py refuse it everything else).
SALES = "SALES_TOKEN"
OPS = "OPS_TOKEN"


def cli_actor() -> Actor:
    """The CLI's credential is access to Redis and the hash secret on this host: name the
    account that used it."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (containers)
        user = "unknown"
    return Actor(f"cli:{user}", "cli")


async def record(
    ctx: OpsContext, actor: Actor, action: str, outcome: str = "done", **detail: object
) -> None:
    await record_detail(ctx, actor, action, detail, outcome)


async def record_detail(
    ctx: OpsContext, actor: Actor, action: str, detail: dict[str, object], outcome: str = "done"
) -> None:
    now = time.time()
    entry_id = f"{int(now * 1000):013d}-{secrets.token_hex(4)}"
    entry = {
        "at": round(now, 3),
        "action": action,
        "credential": actor.credential,
        "via": actor.via,
        "outcome": outcome,
        "detail": detail,
    }
    await ctx.redis.set(keys.ops_log(entry_id), json.dumps(entry), ex=ctx.rules.audit_log_ttl_s)


def _entry_ms(name: str) -> int:
    try:
        return int(name.rsplit(":", 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return 0


async def entries(
    ctx: OpsContext,
    *,
    since_s: float,
    action: str | None = None,
    limit: int = 100,
    now: float | None = None,
) -> list[dict[str, object]]:
    """Entries newer than `since_s`, newest first."""
    now = time.time() if now is None else now
    floor_ms = int((now - since_s) * 1000)
    names = [
        name
        async for name in (
            text(k) async for k in ctx.redis.scan_iter(match=keys.pattern(keys.OPS_LOG), count=500)
        )
        if _entry_ms(name) >= floor_ms
    ]
    names.sort(key=_entry_ms, reverse=True)
    found: list[dict[str, object]] = []
    for start in range(0, len(names), BATCH):
        for raw in await ctx.redis.mget(names[start : start + BATCH]):
            if raw is None:
                continue  # expired since the scan
            try:
                entry = json.loads(text(raw))
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict) and (action is None or entry.get("action") == action):
                found.append(entry)
                if len(found) >= limit:
                    return found
    return found
