"""Every ops action as one function returning the JSON the CLI (`--json`) and the API both
give, so the two can never drift apart. Bad input raises InputError (or a subclass of
ValueError named for its concern) before anything is changed. Actions that read personal
data or change anything take the Actor that asked and leave an audit-log entry
(ops/audit_log.py)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Literal, cast

from agents_catalog.showcase import ShowcaseError
from ops import audit as audit_mod
from ops import audit_log, blocks, privacy, queries
from ops.audit_log import Actor
from ops.blocks import BlockError
from ops.context import OpsContext
from ops.privacy import PrivacyError, SecretMismatch
from ops.sales_requests import RequestInputError

STATUSES = ("issued", "started", "ended", "abandoned", "never_joined")
MAX_LIMIT = 1000
MAX_BUCKETS = 24 * 90


class InputError(ValueError):
    pass


INPUT_ERRORS: tuple[type[ValueError], ...] = (
    InputError, BlockError, PrivacyError, ShowcaseError, RequestInputError,
)  # fmt: skip


def _limit(value: int) -> int:
    if not 1 <= value <= MAX_LIMIT:
        raise InputError(f"limit must be between 1 and {MAX_LIMIT}")
    return value


def _span(value: str, name: str) -> int:
    try:
        return blocks.parse_duration(value)
    except BlockError as exc:
        raise InputError(f"{name}: {exc}") from exc


async def sessions(
    ctx: OpsContext,
    *,
    since: str = "24h",
    persona: str | None = None,
    status: str | None = None,
    reason: str | None = None,
    visitor: str | None = None,
    limit: int = 50,
) -> dict[str, object]:
    if status is not None and status not in STATUSES:
        raise InputError(f"status must be one of {', '.join(STATUSES)}")
    if persona is not None and ctx.catalog.get(persona) is None:
        raise InputError(f"there is no persona called {persona!r}")
    rows = await queries.sessions(
        ctx,
        since_s=_span(since, "since"),
        persona=persona,
        status=status,
        end_reason=reason,
        visitor=visitor,
        limit=_limit(limit),
    )
    return {"since": since, "count": len(rows), "sessions": rows}


async def stats(ctx: OpsContext, *, by: str = "hour", count: int = 24) -> dict[str, object]:
    if by not in ("hour", "day"):
        raise InputError("by must be hour or day")
    if not 1 <= count <= (MAX_BUCKETS if by == "hour" else MAX_BUCKETS // 24):
        raise InputError("count out of range (at most 90 days)")
    return await queries.stats(ctx, by=cast(Literal["hour", "day"], by), count=count)


async def top(
    ctx: OpsContext, *, window: str = "24h", by: str = "sessions", limit: int = 20
) -> dict[str, object]:
    if by not in ("sessions", "minutes", "refusals"):
        raise InputError("by must be sessions, minutes or refusals")
    rows = await queries.top(
        ctx,
        window_s=_span(window, "window"),
        order_by=cast(Literal["sessions", "minutes", "refusals"], by),
        limit=_limit(limit),
    )
    return {"window": window, "by": by, "visitors": rows}


async def list_blocks(ctx: OpsContext) -> dict[str, object]:
    return {"blocks": await blocks.list_blocks(ctx)}


async def block(
    ctx: OpsContext, *, visitor: str, duration: str | None, reason: str, actor: Actor
) -> dict[str, object]:
    seconds = (
        blocks.parse_duration(duration) if duration else ctx.rules.blocks.default_days * 86_400
    )
    done = await blocks.block(ctx, visitor, seconds, reason)
    await audit_log.record(
        ctx, actor, "block", visitor=visitor, for_s=seconds, reason=done["reason"]
    )
    return {"blocked": done}


async def unblock(ctx: OpsContext, *, visitor: str, actor: Actor) -> dict[str, object]:
    lifted = await blocks.unblock(ctx, visitor)
    await audit_log.record(ctx, actor, "unblock", visitor=visitor, was_blocked=lifted)
    return {"visitor": visitor, "unblocked": lifted}


async def _secret_checked(
    ctx: OpsContext, actor: Actor, action: str, run: Awaitable[dict[str, object]]
) -> dict[str, object]:
    try:
        return await run
    except SecretMismatch:
        await audit_log.record(ctx, actor, action, outcome="refused: secret_mismatch")
        raise


async def lookup(ctx: OpsContext, *, ip: str, actor: Actor) -> dict[str, object]:
    result = await _secret_checked(ctx, actor, "lookup", privacy.lookup(ctx, ip))
    found = cast(dict[str, int], result["found"])
    await audit_log.record(ctx, actor, "lookup", sessions=found["sessions"])
    return result


async def erase(ctx: OpsContext, *, ip: str, actor: Actor) -> dict[str, object]:
    result = await _secret_checked(ctx, actor, "erase", privacy.erase(ctx, ip))
    deleted = cast(dict[str, int], result["deleted"])
    calls = cast(dict[str, int], result["calls"])
    kept = cast(dict[str, dict[str, int]], result["kept"])
    await audit_log.record(
        ctx, actor, "erase", sessions=deleted["sessions"], refunded_s=result["refunded_s"],
        calls_ended=calls["ended"], calls_not_ended=calls["not_ended"],
        kept=kept["keys_by_kind"],
    )  # fmt: skip
    return result


async def audit_entries(
    ctx: OpsContext, *, since: str = "7d", action: str | None = None, limit: int = 100
) -> dict[str, object]:
    if action is not None and action not in audit_log.ACTIONS:
        raise InputError(f"action must be one of {', '.join(audit_log.ACTIONS)}")
    rows = await audit_log.entries(
        ctx, since_s=_span(since, "since"), action=action, limit=_limit(limit)
    )
    return {"since": since, "count": len(rows), "entries": rows}


async def audit(ctx: OpsContext) -> dict[str, object]:
    return (await audit_mod.audit(ctx)).as_dict()


async def showcase_list(ctx: OpsContext) -> dict[str, object]:
    return {"personas": [row.as_dict() for row in await ctx.showcase.rows()]}


async def showcase_set(
    ctx: OpsContext,
    *,
    persona: str,
    enabled: bool | None = None,
    featured: bool | None = None,
    order: int | None = None,
    actor: Actor,
) -> dict[str, object]:
    row = await ctx.showcase.set(persona, enabled=enabled, featured=featured, order=order)
    changes = {"enabled": enabled, "featured": featured, "order": order}
    await audit_log.record(
        ctx, actor, "showcase_set", persona=persona,
        changes={k: v for k, v in changes.items() if v is not None},
    )  # fmt: skip
    return {"persona": row.as_dict()}


async def showcase_reset(
    ctx: OpsContext, *, persona: str | None = None, actor: Actor
) -> dict[str, object]:
    reset = await ctx.showcase.reset(persona)
    await audit_log.record(ctx, actor, "showcase_reset", personas=reset)
    return {"reset": reset}
