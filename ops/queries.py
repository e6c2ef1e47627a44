"""Read-only views for ops: recent sessions, stats per hour/day with cost, top visitors.

Session-derived figures (minutes, end reasons, never joined, cost) come from the session
records, which live as long as the retention policy allows; issued/refused counts come from
the hourly stats hashes written by admission (refusals leave no session record).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Literal

from ops.context import OpsContext
from ops.records import CLOSED, SessionView, scan_sessions
from policies.ops_rules import Costs
from policies.replies import text
from redisdb import keys

HOUR_S = 3600
DAY_S = 86_400

SESSION_COLUMNS = (
    "session_id", "issued_at", "persona", "language", "status", "end_reason", "duration_s",
    "visitor", "ua_family", "turns", "connection_quality",
)  # fmt: skip


def session_cost(view: SessionView, costs: Costs) -> float:
    minutes = view.duration_s() / 60
    if minutes <= 0:
        return 0.0
    pm, pmil = costs.per_minute, costs.per_million
    stt_minutes = (view.num("stt_audio_s") or view.duration_s()) / 60
    return (
        minutes * (pm.livekit_agent_session + pm.livekit_participant)
        + stt_minutes * pm.stt_audio
        + (view.num("llm_prompt_tokens") or 0) / 1e6 * pmil.llm_prompt_tokens
        + (view.num("llm_completion_tokens") or 0) / 1e6 * pmil.llm_completion_tokens
        + (view.num("tts_chars") or 0) / 1e6 * pmil.tts_chars
    )


# --- sessions ---------------------------------------------------------------------------


async def sessions(
    ctx: OpsContext,
    *,
    since_s: float = DAY_S,
    persona: str | None = None,
    status: str | None = None,
    end_reason: str | None = None,
    visitor: str | None = None,
    limit: int = 50,
    now: float | None = None,
) -> list[dict[str, object]]:
    now = time.time() if now is None else now
    rows = []
    async for view in scan_sessions(ctx.redis, since=now - since_s):
        current = view.status(now, ctx.policies)
        if persona and view.persona != persona:
            continue
        if status and current != status:
            continue
        if end_reason and view.fields.get("end_reason") != end_reason:
            continue
        if visitor and view.visitor != visitor:
            continue
        row: dict[str, object] = {c: view.fields.get(c) for c in SESSION_COLUMNS}
        row["issued_at"] = view.issued_at
        row["status"] = current
        row["duration_s"] = round(view.duration_s(), 1) if current in CLOSED else None
        rows.append(row)
    rows.sort(key=lambda r: float(r["issued_at"] or 0), reverse=True)  # type: ignore[arg-type]
    return rows[:limit]


# --- stats ------------------------------------------------------------------------------


@dataclass
class Bucket:
    start: int  # unix seconds
    issued: int = 0
    refusals: Counter[str] = field(default_factory=Counter)
    personas: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    end_reasons: Counter[str] = field(default_factory=Counter)
    minutes: float = 0.0
    cost: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "start": self.start,
            "issued": self.issued,
            "refused": sum(self.refusals.values()),
            "refusals": dict(sorted(self.refusals.items())),
            "personas": dict(sorted(self.personas.items())),
            "sessions": dict(sorted(self.statuses.items())),
            "end_reasons": dict(sorted(self.end_reasons.items())),
            "never_joined": self.statuses.get("never_joined", 0),
            # Tokens the page gave back unused (its connection failed, or the visitor
            # cancelled): a high count says LiveKit is out of many visitors' reach.
            "given_back": self.statuses.get("given_back", 0),
            "minutes": round(self.minutes, 2),
            "cost": round(self.cost, 4),
        }

    def add(self, other: Bucket) -> None:
        self.issued += other.issued
        self.refusals.update(other.refusals)
        self.personas.update(other.personas)
        self.statuses.update(other.statuses)
        self.end_reasons.update(other.end_reasons)
        self.minutes += other.minutes
        self.cost += other.cost


async def stats(
    ctx: OpsContext,
    *,
    by: Literal["hour", "day"] = "hour",
    count: int = 24,
    now: float | None = None,
) -> dict[str, object]:
    now = time.time() if now is None else now
    size = HOUR_S if by == "hour" else DAY_S
    last = int(now // size)
    starts = [(last - i) * size for i in range(count - 1, -1, -1)]
    buckets = {s: Bucket(s) for s in starts}
    first = starts[0]

    hours = range(first // HOUR_S, last * size // HOUR_S + size // HOUR_S)
    async with ctx.redis.pipeline(transaction=False) as pipe:
        for hour in hours:
            pipe.hgetall(keys.stats(hour))
        results = await pipe.execute()
    for hour, raw in zip(hours, results, strict=True):
        bucket = buckets[(hour * HOUR_S) // size * size]
        for name, value in ((text(k), int(v)) for k, v in raw.items()):
            if name == "issued":
                bucket.issued += value
            elif name.startswith("refused:"):
                bucket.refusals[name.removeprefix("refused:")] += value
            elif name.startswith("persona:"):
                bucket.personas[name.removeprefix("persona:")] += value

    async for view in scan_sessions(ctx.redis, since=first):
        found = buckets.get(int(view.issued_at // size) * size)
        if found is None:
            continue
        bucket = found
        status = view.status(now, ctx.policies)
        bucket.statuses[status] += 1
        if status in CLOSED:
            reason = view.fields.get("end_reason") or status
            bucket.end_reasons[reason] += 1
            bucket.minutes += view.duration_s() / 60
            bucket.cost += session_cost(view, ctx.costs)

    total = Bucket(first)
    for bucket in buckets.values():
        total.add(bucket)
    day = int(now // DAY_S)
    used_s = int(await ctx.redis.get(keys.global_seconds(day)) or 0)
    return {
        "by": by,
        "currency": ctx.costs.currency,
        "buckets": [buckets[s].as_dict() for s in starts],
        "total": total.as_dict(),
        "today": {
            "minutes_reserved": round(used_s / 60, 2),
            "minutes_ceiling": ctx.policies.limits.global_.minutes_per_day,
        },
    }


# --- top visitors ---------------------------------------------------------------------


def _is_bot_family(family: str) -> bool:
    browser, _, rest = family.partition("/")
    return browser == "none" or rest.endswith("/bot")


def _is_non_browser_family(family: str) -> bool:
    return family.endswith("/other") and not _is_bot_family(family)


async def refusals_by_visitor(ctx: OpsContext, days: list[int]) -> Counter[str]:
    counts: Counter[str] = Counter()
    wanted = {str(d) for d in days}
    found = []
    async for key in ctx.redis.scan_iter(match=keys.pattern(keys.VISITOR_REFUSALS), count=500):
        name = text(key)
        _, visitor, day = name.rsplit(":", 2)
        if day in wanted:
            found.append((visitor, name))
    if found:
        values = await ctx.redis.mget([name for _, name in found])
        for (visitor, _), value in zip(found, values, strict=True):
            counts[visitor] += int(value or 0)
    return counts


@dataclass
class VisitorTally:
    sessions: int = 0
    minutes: float = 0.0
    never_joined: int = 0
    short_sessions: int = 0
    uas: set[str] = field(default_factory=set)
    families: set[str] = field(default_factory=set)


async def top(
    ctx: OpsContext,
    *,
    window_s: float = DAY_S,
    order_by: Literal["sessions", "minutes", "refusals"] = "sessions",
    limit: int = 20,
    now: float | None = None,
) -> list[dict[str, object]]:
    """Visitors ranked over the window, with the automated-looking ones flagged
    (signals and thresholds: policies/ops.yaml `automated`)."""
    from ops.blocks import list_blocks

    now = time.time() if now is None else now
    signals = ctx.rules.automated
    per: dict[str, VisitorTally] = defaultdict(VisitorTally)
    async for view in scan_sessions(ctx.redis, since=now - window_s):
        if not view.visitor:
            continue
        tally = per[view.visitor]
        status = view.status(now, ctx.policies)
        tally.sessions += 1
        tally.minutes += view.duration_s() / 60
        if status == "never_joined":
            tally.never_joined += 1
        if status in ("ended", "abandoned") and view.duration_s() < signals.short_session_s:
            tally.short_sessions += 1
        tally.uas.add(view.fields.get("ua", ""))
        tally.families.add(view.fields.get("ua_family", ""))

    days = list(range(int((now - window_s) // DAY_S), int(now // DAY_S) + 1))
    refusals = await refusals_by_visitor(ctx, days)
    blocks = {str(b["visitor"]): b for b in await list_blocks(ctx)}
    rows: list[dict[str, object]] = []
    for visitor in set(per) | set(refusals) | set(blocks):
        tally = per[visitor]
        families = sorted(f for f in tally.families if f)
        refused = refusals.get(visitor, 0)
        flags = [
            name
            for name, hit in (
                ("refusals", refused >= signals.refusals),
                ("never_joined", tally.never_joined >= signals.never_joined),
                ("user_agents", len(tally.uas) >= signals.user_agents),
                ("short_sessions", tally.short_sessions >= signals.short_sessions),
                (
                    "bot_user_agent",
                    signals.bot_user_agent and any(_is_bot_family(f) for f in families),
                ),
                (
                    "non_browser_user_agent",
                    signals.non_browser_user_agent
                    and any(_is_non_browser_family(f) for f in families),
                ),
            )
            if hit
        ]
        block = blocks.get(visitor)
        rows.append(
            {
                "visitor": visitor,
                "sessions": tally.sessions,
                "minutes": round(tally.minutes, 2),
                "refusals": refused,
                "never_joined": tally.never_joined,
                "short_sessions": tally.short_sessions,
                "user_agents": len(tally.uas),
                "ua_families": families,
                "blocked": block is not None,
                "block_reason": block["reason"] if block else None,
                "flags": flags,
                "automated": bool(flags),
            }
        )

    def rank(row: dict[str, object]) -> tuple[float, ...]:
        return tuple(float(row[k]) for k in (order_by, "sessions", "refusals"))  # type: ignore[arg-type]

    rows.sort(key=rank, reverse=True)
    return rows[:limit]
